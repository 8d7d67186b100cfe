#include "model/hybrid_sequence.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace lightserve::model {

using kernels::KvView;

HybridSequence::HybridSequence(KvArena& arena, const LlamaConfig& config,
                               const LightTransferSettings& settings)
    : arena_(arena),
      row_(arena.row_elements()),
      num_heads_(config.num_heads),
      settings_(settings),
      ratios_(config.num_layers, std::numeric_limits<float>::quiet_NaN()),
      head_ratios_(static_cast<size_t>(config.num_layers) * config.num_heads,
                   std::numeric_limits<float>::quiet_NaN()) {}

HybridSequence::HybridSequence(ForkOf fork)
    : arena_(fork.parent.arena_),
      row_(fork.parent.row_),
      num_heads_(fork.parent.num_heads_),
      settings_(fork.parent.settings_),
      planned_lazy_(fork.parent.planned_lazy_),
      ratios_(fork.parent.ratios_),
      head_ratios_(fork.parent.head_ratios_) {}

HybridSequence::~HybridSequence() {
  if (!owned_.empty()) arena_.manager().release(std::move(owned_));
}

namespace {

// The error when `settings` cannot run on a footprint of this layout, else OK.
Status check_mode(const memory::KvLayout& layout, const LightTransferSettings& settings,
                  int32_t num_layers, const memory::Footprint& footprint) {
  if (Status s = layout.check_footprint(footprint); !s) return s;
  if ((settings.mode == LtMode::kOnline || settings.mode == LtMode::kStatic ||
       settings.mode == LtMode::kRandom) &&
      settings.num_full_layers(num_layers) != footprint.full_layers) {
    return Error{"lazy_fraction " + std::to_string(settings.lazy_fraction) + " keeps " +
                 std::to_string(settings.num_full_layers(num_layers)) +
                 " layers full, but the KV arena is laid out for " +
                 std::to_string(footprint.full_layers)};
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<HybridSequence>> HybridSequence::create(
    KvArena& arena, const LlamaConfig& config, const LightTransferSettings& settings,
    int32_t token_capacity) {
  const memory::KvLayout& layout = arena.layout();
  const int32_t num_layers = config.num_layers;
  if (Status s = settings.validate(num_layers); !s) return Error{s.message()};
  memory::Footprint footprint = layout.hybrid_footprint();
  if (settings.mode == LtMode::kFull) footprint = layout.full_footprint();
  if (settings.mode == LtMode::kStreaming) footprint = layout.streaming_footprint();
  if (Status s = check_mode(layout, settings, num_layers, footprint); !s) {
    return Error{s.message()};
  }
  auto plan = arena.manager().plan_admit(footprint, token_capacity);
  if (!plan) {
    return Error{"the KV arena has no room for a request of " + std::to_string(token_capacity) +
                 " tokens (" + std::to_string(arena.manager().num_free_pages()) + " pages free)"};
  }
  std::unique_ptr<HybridSequence> seq(new HybridSequence(arena, config, settings));
  seq->owned_ = arena.manager().commit(std::move(plan).value());
  seq->kv_ = &seq->owned_;
  seq->init_plan(footprint);
  return seq;
}

Result<std::unique_ptr<HybridSequence>> HybridSequence::attach(
    KvArena& arena, const LlamaConfig& config, const LightTransferSettings& settings,
    memory::KvAllocation& allocation) {
  const memory::KvLayout& layout = arena.layout();
  const int32_t num_layers = config.num_layers;
  if (allocation.empty()) return Error{"HybridSequence::attach: the KV allocation is empty"};
  if (Status s = settings.validate(num_layers); !s) return Error{s.message()};
  const memory::Footprint footprint = allocation.footprint();
  // The allocation's footprint decides the mode: a full footprint runs plain full attention, a
  // streaming one every layer lazy (the per-request overrides), a hybrid one the settings' mode.
  LightTransferSettings effective = settings;
  if (footprint.lazy_layers == 0) {
    effective.mode = LtMode::kFull;
  } else if (footprint.full_layers == 0) {
    effective.mode = LtMode::kStreaming;
  } else if (settings.mode == LtMode::kFull || settings.mode == LtMode::kStreaming) {
    return Error{"LightTransfer mode " + std::string(to_string(settings.mode)) +
                 " cannot run on a hybrid KV allocation (" + std::to_string(footprint.full_layers) +
                 " full / " + std::to_string(footprint.lazy_layers) + " lazy layers)"};
  }
  if (Status s = check_mode(layout, effective, num_layers, footprint); !s) {
    return Error{s.message()};
  }
  std::unique_ptr<HybridSequence> seq(new HybridSequence(arena, config, effective));
  seq->kv_ = &allocation;
  seq->init_plan(footprint);
  return seq;
}

Result<std::unique_ptr<HybridSequence>> HybridSequence::fork(kernels::Backend& backend,
                                                             const HybridSequence& parent,
                                                             memory::KvAllocation& allocation) {
  if (parent.size_ == 0) return Error{"HybridSequence::fork: the parent has not prefilled"};
  if (allocation.empty()) return Error{"HybridSequence::fork: the KV allocation is empty"};
  if (allocation.id() == parent.kv_->id()) {
    return Error{"HybridSequence::fork: the child's KV allocation is the parent's"};
  }
  if (!(allocation.footprint() == parent.kv_->footprint()) ||
      allocation.token_capacity() < parent.size_) {
    return Error{"HybridSequence::fork: the child's KV (" +
                 std::to_string(allocation.footprint().full_layers) + " full lanes, " +
                 std::to_string(allocation.token_capacity()) +
                 " tokens) does not match the parent's footprint and size"};
  }
  std::unique_ptr<HybridSequence> seq(new HybridSequence(ForkOf{parent}));
  seq->kv_ = &allocation;
  allocation.layer_map() = parent.kv_->layer_map();
  // Whole pages: a full lane's first ceil(size / block) pages hold its tokens, a lazy lane's
  // first ceil(min(size, sink + window) / block) its ring rows.
  const memory::KvLayout& layout = parent.arena_.layout();
  const int64_t block = layout.block_size;
  const int64_t full_pages = (parent.size_ + block - 1) / block;
  const int64_t ring =
      std::min<int64_t>(parent.size_, int64_t{parent.settings_.sink} + parent.settings_.window);
  const int64_t lazy_pages = (ring + block - 1) / block;
  std::vector<kernels::Backend::RowRun> runs;
  KvArena& arena = parent.arena_;
  for (const bool values : {false, true}) {
    auto add = [&](const memory::PageTable& from, const memory::PageTable& to, int64_t pages) {
      for (int32_t lane = 0; lane < from.num_lanes(); ++lane) {
        for (int64_t j = 0; j < pages; ++j) {
          runs.push_back({arena.page_rows(values, from.page(lane, j)),
                          arena.page_rows(values, to.page(lane, j)), block});
        }
      }
    };
    add(parent.kv_->full_pages(), allocation.full_pages(), full_pages);
    add(parent.kv_->lazy_pages(), allocation.lazy_pages(), lazy_pages);
  }
  backend.copy_runs_f16(runs, parent.row_);
  seq->size_ = parent.size_;
  seq->note_peak(0, allocation.layer_map().num_full_layers());
  return seq;
}

void HybridSequence::init_plan(const memory::Footprint& footprint) {
  const int32_t num_layers = static_cast<int32_t>(ratios_.size());
  const int32_t num_lazy = footprint.lazy_layers;
  planned_lazy_.assign(num_layers, false);
  switch (settings_.mode) {
    case LtMode::kOnline:
      selector_ = std::make_unique<LazySelector>(
          footprint.full_layers,
          settings_.plan ? settings_.plan->tie_rank() : std::vector<int32_t>{});
      break;
    case LtMode::kStatic:
      for (int32_t layer : settings_.plan->lazy_layers(num_lazy)) planned_lazy_[layer] = true;
      break;
    case LtMode::kRandom: {
      std::vector<int32_t> order(num_layers);
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 rng(settings_.seed);
      std::shuffle(order.begin(), order.end(), rng);
      for (int32_t i = 0; i < num_lazy; ++i) planned_lazy_[order[i]] = true;
      break;
    }
    case LtMode::kStreaming:
      planned_lazy_.assign(num_layers, true);
      break;
    case LtMode::kFull:
      break;
  }
}

Status HybridSequence::check_append(int32_t n) const {
  if (static_cast<int64_t>(size_) + n > kv_->token_capacity()) {
    return Error{"sequence of " + std::to_string(static_cast<int64_t>(size_) + n) +
                 " tokens exceeds its KV reservation of " + std::to_string(kv_->token_capacity())};
  }
  if (size_ > 0 && n != 1) {
    return Error{
        "a LightTransfer sequence takes its whole prompt in the first step and one token "
        "per step after it (got " +
        std::to_string(n) + " tokens after " + std::to_string(size_) + ")"};
  }
  return Status::Ok();
}

bool HybridSequence::reserve(int32_t token_capacity) {
  if (token_capacity <= kv_->token_capacity()) return true;
  auto plan = arena_.manager().plan_grow(*kv_, token_capacity);
  if (!plan) return false;
  arena_.manager().commit(*kv_, std::move(plan).value());
  return true;
}

uint16_t* HybridSequence::full_row(bool values, int32_t lane, int32_t token) {
  return arena_.data(values) + kv_->full_row(arena_.layout(), lane, token) * row_;
}

uint16_t* HybridSequence::lazy_row(bool values, int32_t lane, int32_t token) {
  return arena_.data(values) + kv_->lazy_row(arena_.layout(), lane, token) * row_;
}

KvView HybridSequence::full_view(int32_t lane) {
  KvView view;
  view.kind = KvView::Kind::kPaged;
  view.k = arena_.data(false);
  view.v = arena_.data(true);
  view.row_stride = row_;
  view.block_table = kv_->full_pages().lane(lane).data();
  view.block_size = arena_.layout().block_size;
  view.block_stride = arena_.page_stride();
  return view;
}

KvView HybridSequence::lazy_view(int32_t lane) {
  KvView view;
  view.kind = KvView::Kind::kRing;
  view.k = arena_.data(false);
  view.v = arena_.data(true);
  view.row_stride = row_;
  view.block_table = kv_->lazy_pages().lane(lane).data();
  view.block_size = arena_.layout().block_size;
  view.block_stride = arena_.page_stride();
  view.sink = settings_.sink;
  view.window = settings_.window;
  return view;
}

LayerKv HybridSequence::store_layer(kernels::Backend& b, int32_t layer, const float* k,
                                    const float* v, int64_t src_stride, int32_t n,
                                    kernels::DType kv_type) {
  LayerKv out;
  if (size_ == 0) {
    // Prefill: the whole prompt's K/V of this layer go to scratch; exact attention reads them.
    scratch_rows_ = n;
    uint16_t* sk = scratch_k_.reserve<uint16_t>(b, n * row_);
    uint16_t* sv = scratch_v_.reserve<uint16_t>(b, n * row_);
    b.store_kv(k, src_stride, n, row_, sk, row_, kv_type);
    b.store_kv(v, src_stride, n, row_, sv, row_, kv_type);
    out.view.kind = KvView::Kind::kContiguous;
    out.view.k = sk;
    out.view.v = sv;
    out.view.row_stride = row_;
    if (selector_) out.lse = lse_.reserve<float>(b, static_cast<int64_t>(n) * num_heads_);
    return out;
  }
  // Decode: one token, written where its layer lives.
  const memory::LayerMap& map = kv_->layer_map();
  const int32_t lane = map.lane_of(layer);
  const bool lazy = map.is_lazy(layer);
  uint16_t* k_dst = lazy ? lazy_row(false, lane, size_) : full_row(false, lane, size_);
  uint16_t* v_dst = lazy ? lazy_row(true, lane, size_) : full_row(true, lane, size_);
  b.store_kv(k, src_stride, 1, row_, k_dst, row_, kv_type);
  b.store_kv(v, src_stride, 1, row_, v_dst, row_, kv_type);
  out.view = lazy ? lazy_view(lane) : full_view(lane);
  return out;
}

template <typename Src, typename Dst>
void HybridSequence::move_tokens(kernels::Backend& b, int32_t begin, int32_t end, Src src,
                                 Dst dst) {
  std::vector<kernels::Backend::RowRun> runs;
  for (const bool values : {false, true}) {
    for (int32_t t = begin; t < end;) {
      const uint16_t* s0 = src(values, t);
      uint16_t* d0 = dst(values, t);
      int32_t count = 1;
      while (t + count < end && src(values, t + count) == s0 + count * row_ &&
             dst(values, t + count) == d0 + count * row_) {
        ++count;
      }
      runs.push_back({s0, d0, count});
      t += count;
    }
  }
  b.copy_runs_f16(runs, row_);
}

void HybridSequence::place_full(kernels::Backend& b, int32_t layer, int32_t n) {
  const int32_t lane = kv_->layer_map().lane_of(layer);
  move_tokens(
      b, 0, n, [&](bool values, int32_t t) { return scratch_row(values, t); },
      [&](bool values, int32_t t) { return full_row(values, lane, t); });
}

void HybridSequence::place_lazy_from_scratch(kernels::Backend& b, int32_t layer, int32_t n) {
  const int32_t lane = kv_->layer_map().lane_of(layer);
  auto from = [&](bool values, int32_t t) { return scratch_row(values, t); };
  auto to = [&](bool values, int32_t t) { return lazy_row(values, lane, t); };
  move_tokens(b, 0, std::min(settings_.sink, n), from, to);
  move_tokens(b, std::max(settings_.sink, n - settings_.window), n, from, to);
}

void HybridSequence::demote(kernels::Backend& b, int32_t layer, int32_t n) {
  memory::LayerMap& map = kv_->layer_map();
  const int32_t full_lane = map.lane_of(layer);
  const int32_t lazy_lane = map.make_lazy(layer);
  // The freed full lane keeps its data until the arriving layer overwrites it, after this copy.
  auto from = [&](bool values, int32_t t) { return full_row(values, full_lane, t); };
  auto to = [&](bool values, int32_t t) { return lazy_row(values, lazy_lane, t); };
  move_tokens(b, 0, std::min(settings_.sink, n), from, to);
  move_tokens(b, std::max(settings_.sink, n - settings_.window), n, from, to);
}

void HybridSequence::finish_layer(kernels::Backend& b, int32_t layer, const float* q,
                                  const kernels::AttentionShape& shape, int32_t n) {
  if (size_ != 0) return;  // decode: nothing to decide
  memory::LayerMap& map = kv_->layer_map();
  // Full-length caches alive right now: the request's full lanes plus this layer's scratch.
  note_peak(scratch_rows_ * row_ * 2 * 2, map.num_full_layers() + 1);
  bool keep_full = !planned_lazy_[layer];
  if (selector_) {
    KvView scratch;
    scratch.kind = KvView::Kind::kContiguous;
    scratch.k = scratch_k_.get<uint16_t>();
    scratch.v = scratch_v_.get<uint16_t>();
    scratch.row_stride = row_;
    const float ratio = b.lazy_ratio(q, lse_.get<float>(), scratch, n, settings_.w_last,
                                     settings_.sink, settings_.window, shape, settings_.score,
                                     head_ratios_.data() + static_cast<size_t>(layer) * num_heads_);
    ratios_[layer] = ratio;
    const LazySelector::Decision d = selector_->push(layer, ratio);
    if (d.demoted >= 0) demote(b, d.demoted, n);
    keep_full = d.arrival_full;
  }
  if (keep_full) {
    map.assign_full(layer);
    place_full(b, layer, n);
  } else {
    map.assign_lazy(layer);
    place_lazy_from_scratch(b, layer, n);
  }
}

void HybridSequence::advance(int32_t n) {
  if (size_ == 0) {
    // Prefill done: the scratch layer is gone; only the pages remain.
    scratch_k_.reset();
    scratch_v_.reset();
    lse_.reset();
    scratch_rows_ = 0;
  }
  size_ += n;
  note_peak(0, kv_->layer_map().num_full_layers());
}

int64_t HybridSequence::kv_bytes() const {
  return kv_->num_pages() * arena_.layout().page_bytes();
}

void HybridSequence::note_peak(int64_t extra_bytes, int32_t full_length_layers) {
  peak_bytes_ = std::max(peak_bytes_, kv_bytes() + extra_bytes);
  peak_full_layers_ = std::max(peak_full_layers_, full_length_layers);
}

}  // namespace lightserve::model
