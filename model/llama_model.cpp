#include "model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>

namespace lightserve::model {

using kernels::WeightView;

struct LlamaModel::Layer {
  kernels::Buffer attn_norm;  // f32, backend memory
  kernels::Buffer ffn_norm;
  kernels::Buffer qkv_bias;  // qwen2: Q, K, V biases stacked as qkv's rows; empty otherwise
  std::unique_ptr<kernels::Weight> qkv;      // Q, K, V projections stacked: one matmul
  std::unique_ptr<kernels::Weight> output;   // attention output projection
  std::unique_ptr<kernels::Weight> gate_up;  // FFN gate and up stacked: one matmul
  std::unique_ptr<kernels::Weight> down;
};

SequenceCache::SequenceCache(const LlamaConfig& config, int32_t capacity)
    : capacity_(capacity),
      num_layers_(config.num_layers),
      row_(static_cast<int64_t>(config.num_kv_heads) * config.head_dim),
      layer_stride_(row_ * capacity) {}

Status SequenceCache::check_append(int32_t n) const {
  if (static_cast<int64_t>(size_) + n > capacity_) {
    return Error{"sequence of " + std::to_string(static_cast<int64_t>(size_) + n) +
                 " tokens exceeds its cache capacity of " + std::to_string(capacity_)};
  }
  return Status::Ok();
}

LayerKv SequenceCache::store_layer(kernels::Backend& backend, int32_t layer, const float* k,
                                   const float* v, int64_t src_stride, int32_t n,
                                   kernels::DType kv_type) {
  keys_.reserve<uint16_t>(backend, layer_stride_ * num_layers_);
  values_.reserve<uint16_t>(backend, layer_stride_ * num_layers_);
  const int64_t dst = static_cast<int64_t>(size_) * row_;
  backend.store_kv(k, src_stride, n, row_, keys(layer) + dst, row_, kv_type);
  backend.store_kv(v, src_stride, n, row_, values(layer) + dst, row_, kv_type);
  LayerKv out;
  out.view.kind = kernels::KvView::Kind::kContiguous;
  out.view.k = keys(layer);
  out.view.v = values(layer);
  out.view.row_stride = row_;
  return out;
}

namespace {

WeightView view_of(const GgufFile& file, const GgufTensorInfo& t) {
  // ggml order: dims[0] is the input (contiguous) axis, dims[1] the output rows.
  return WeightView{t.type, t.dims.size() > 1 ? t.dims[1] : 1, t.dims[0], file.tensor_data(t)};
}

// Small tensors (a norm's weights; Q, K and V biases) as f32 in backend memory, concatenated.
kernels::Buffer f32_buffer(kernels::Backend& backend, const GgufFile& file,
                           std::initializer_list<const GgufTensorInfo*> parts) {
  std::vector<float> v;
  for (const GgufTensorInfo* t : parts) {
    const size_t at = v.size();
    v.resize(at + static_cast<size_t>(t->num_elements));
    kernels::dequantize_row(t->type, file.tensor_data(*t), v.data() + at, t->num_elements);
  }
  const auto count = static_cast<int64_t>(v.size());
  kernels::Buffer out;
  backend.upload(out.reserve<float>(backend, count), v.data(),
                 count * static_cast<int64_t>(sizeof(float)));
  return out;
}

}  // namespace

LlamaModel::LlamaModel(kernels::Backend& backend) : backend_(backend) {}
LlamaModel::~LlamaModel() = default;

Result<std::unique_ptr<LlamaModel>> LlamaModel::load(const ModelSource& source,
                                                     kernels::Backend& backend,
                                                     const LoadOptions& options) {
  const std::string path = source.describe();
  auto file = open_model_file(source);
  if (!file) return file.error();
  std::unique_ptr<LlamaModel> model(new LlamaModel(backend));
  model->file_ = std::move(file).value();

  auto config = LlamaConfig::from_gguf(*model->file_);
  if (!config) return Error{path + ": " + config.error().message};
  model->config_ = config.value();

  auto tensors = LlamaTensors::bind(*model->file_, model->config_);
  if (!tensors) return Error{path + ": " + tensors.error().message};
  model->tensors_ = std::move(tensors).value();

  auto tokenizer = Tokenizer::from_gguf(*model->file_);
  if (!tokenizer) return Error{path + ": " + tokenizer.error().message};
  model->tokenizer_ = std::move(tokenizer).value();
  if (model->tokenizer_->vocab_size() != model->config_.vocab_size) {
    return Error{path + ": tokenizer has " + std::to_string(model->tokenizer_->vocab_size()) +
                 " tokens but the model's vocabulary is " +
                 std::to_string(model->config_.vocab_size)};
  }

  auto chat = source.chat_template.empty()
                  ? ChatTemplate::from_gguf(*model->file_, *model->tokenizer_)
                  : ChatTemplate::from_text(source.chat_template, *model->tokenizer_);
  if (!chat && !source.chat_template.empty()) {
    return Error{"--chat-template: " + chat.error().message};
  }
  if (chat) {
    model->chat_ = std::move(chat).value();
  } else {
    model->chat_error_ = chat.error().message;
  }

  if (Status s = model->prepare(options); !s) return Error{path + ": " + s.message()};
  return model;
}

Status LlamaModel::prepare(const LoadOptions& options) {
  const GgufFile& f = *file_;
  round_probabilities_f16_ = options.llama_cpp_attention;
  if (!kernels::is_kv_type(options.kv_type)) {
    return Error{"the KV cache type must be f16 or bf16"};
  }
  kv_type_ = options.kv_type;
  int64_t total = 0;
  for (const auto& t : f.tensors()) total += t.num_bytes;
  int64_t done = 0;
  auto advance = [&](const GgufTensorInfo* t) {
    if (t == nullptr) return;
    done += t->num_bytes;
    if (options.progress)
      options.progress(static_cast<uint64_t>(done), static_cast<uint64_t>(total));
  };
  weight_file_bytes_ = total;

  std::string weight_error;  // the first weight the backend refused
  // Q/K/V (and gate/up) stacked into one weight, one matmul; the parts may differ in type
  // (llama.cpp's K-quant mixes give V a higher-precision type than Q and K).
  auto stacked =
      [&](std::initializer_list<const GgufTensorInfo*> parts) -> std::unique_ptr<kernels::Weight> {
    std::vector<WeightView> views;
    for (auto* p : parts) views.push_back(view_of(f, *p));
    std::unique_ptr<kernels::Weight> w = backend_.make_weight(views);
    for (auto* p : parts) advance(p);
    if (w == nullptr && weight_error.empty()) {
      weight_error = "the backend cannot hold tensor " + (*parts.begin())->name + " (type " +
                     std::string(kernels::traits((*parts.begin())->type).name) + ")";
    }
    // A weight the backend copied into its own layout no longer needs the file's pages.
    if (w != nullptr && w->resident_bytes() > 0) {
      for (auto* p : parts) f.release_pages(*p);
    }
    return w;
  };

  layers_.resize(tensors_.layers.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LayerTensors& t = tensors_.layers[i];
    Layer& layer = layers_[i];
    layer.attn_norm = f32_buffer(backend_, f, {t.attn_norm});
    layer.ffn_norm = f32_buffer(backend_, f, {t.ffn_norm});
    if (config_.qkv_bias) {
      layer.qkv_bias = f32_buffer(backend_, f, {t.attn_q_bias, t.attn_k_bias, t.attn_v_bias});
      advance(t.attn_q_bias);
      advance(t.attn_k_bias);
      advance(t.attn_v_bias);
    }
    layer.qkv = stacked({t.attn_q, t.attn_k, t.attn_v});
    layer.gate_up = stacked({t.ffn_gate, t.ffn_up});
    layer.output = stacked({t.attn_output});
    layer.down = stacked({t.ffn_down});
    advance(t.attn_norm);
    advance(t.ffn_norm);
  }
  token_embd_ = stacked({tensors_.token_embd});
  if (!config_.tied_embeddings) output_ = stacked({tensors_.output});
  output_norm_ = f32_buffer(backend_, f, {tensors_.output_norm});
  advance(tensors_.output_norm);
  if (tensors_.rope_freqs != nullptr) {
    rope_freqs_ = f32_buffer(backend_, f, {tensors_.rope_freqs});
    advance(tensors_.rope_freqs);
  }
  if (!weight_error.empty()) return Error{weight_error};
  return Status::Ok();
}

int64_t LlamaModel::weight_resident_bytes() const {
  int64_t bytes = token_embd_->resident_bytes() + (output_ ? output_->resident_bytes() : 0) +
                  rope_freqs_.capacity();
  for (const auto& l : layers_) {
    bytes += l.qkv->resident_bytes() + l.output->resident_bytes() + l.gate_up->resident_bytes() +
             l.down->resident_bytes();
    bytes += l.attn_norm.capacity() + l.ffn_norm.capacity() + l.qkv_bias.capacity();
  }
  return bytes;
}

Status LlamaModel::validate(std::span<const BatchEntry> batch) const {
  const int32_t num_layers = static_cast<int32_t>(layers_.size());
  if (batch.empty()) return Error{"empty batch"};
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchEntry& e = batch[i];
    if (e.cache == nullptr || e.tokens.empty()) return Error{"empty batch entry"};
    for (size_t j = 0; j < i; ++j) {
      if (batch[j].cache == e.cache) return Error{"one sequence appears twice in a batch"};
    }
    const int32_t n = static_cast<int32_t>(e.tokens.size());
    const int32_t begin = e.layer_begin;
    const int32_t end = e.layer_end == BatchEntry::kAllLayers ? num_layers : e.layer_end;
    const std::string range = "layers [" + std::to_string(begin) + ", " + std::to_string(end) + ")";
    if (begin < 0 || begin >= end || end > num_layers) {
      return Error{range + " are not a range of the model's " + std::to_string(num_layers) +
                   " layers"};
    }
    const PendingTokens& pending = e.cache->pending();
    if (begin != pending.layers_done) {
      return Error{range + " do not resume the sequence's pending tokens, which have run " +
                   std::to_string(pending.layers_done) + " layers"};
    }
    if (!pending.empty() && pending.num_tokens != n) {
      return Error{"resumed with " + std::to_string(n) + " tokens, but " +
                   std::to_string(pending.num_tokens) + " are pending"};
    }
    if (Status s = e.cache->check_append(n); !s) return s;
    if (e.num_candidates < 0 || e.num_candidates > kernels::kMaxTopK) {
      return Error{"num_candidates " + std::to_string(e.num_candidates) + " is outside [0, " +
                   std::to_string(kernels::kMaxTopK) + "]"};
    }
    if (e.num_candidates > 0 && (e.all_logits || e.row_sink != nullptr)) {
      return Error{"num_candidates with all_logits or a row sink (those rows need their logits)"};
    }
    for (int32_t id : e.tokens) {
      if (id < 0 || id >= config_.vocab_size) {
        return Error{"token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                     std::to_string(config_.vocab_size - 1) + ")"};
      }
    }
  }
  return Status::Ok();
}

void LlamaModel::pack_rows(std::span<const BatchEntry> batch, int32_t layer) {
  Scratch& s = scratch_;
  const int64_t d = config_.hidden_dim;
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(float));
  s.packed.clear();
  s.seqs.clear();
  s.positions.clear();
  int64_t rows = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchEntry& e = batch[i];
    const int32_t n = static_cast<int32_t>(e.tokens.size());
    const int64_t old_first = s.first_row[i];
    PendingTokens& pending = e.cache->pending();
    if (layer < s.layer_begin[i] || layer >= s.layer_end[i]) {
      if (old_first >= 0) {  // its range ended at this layer: park it
        pending.hidden.assign(backend_, s.x.get<float>() + old_first * d, n * row_bytes);
      }
      s.first_row[i] = -1;
      continue;
    }
    float* dst = s.x_next.get<float>() + rows * d;
    if (old_first >= 0) {
      backend_.copy(dst, s.x.get<float>() + old_first * d, n * row_bytes);
    } else if (layer == 0) {
      backend_.embed(*token_embd_, e.tokens, dst);
    } else {
      backend_.copy(dst, pending.hidden.get<float>(), n * row_bytes);
    }
    kernels::AttentionSeq seq;
    seq.first_row = rows;
    seq.num_queries = n;
    seq.first_pos = e.cache->size();
    for (int32_t t = 0; t < n; ++t) s.positions.push_back(seq.first_pos + t);
    s.first_row[i] = rows;
    s.packed.push_back(i);
    s.seqs.push_back(seq);
    rows += n;
  }
  s.x.swap(s.x_next);
  s.num_rows = rows;
}

void LlamaModel::pack_decode_rows(std::span<const BatchEntry> batch, int64_t padded_rows) {
  Scratch& s = scratch_;
  s.packed.clear();
  s.seqs.clear();
  // Padded rows: token 0 at position 0, no KV stored, no attention sequence; ignored at the end.
  s.positions.assign(static_cast<size_t>(padded_rows), 0);
  s.decode_ids.assign(static_cast<size_t>(padded_rows), 0);
  for (size_t i = 0; i < batch.size(); ++i) {
    kernels::AttentionSeq seq;
    seq.first_row = static_cast<int64_t>(i);
    seq.num_queries = 1;
    seq.first_pos = batch[i].cache->size();
    s.positions[i] = seq.first_pos;
    s.decode_ids[i] = batch[i].tokens[0];
    s.first_row[i] = static_cast<int64_t>(i);
    s.packed.push_back(i);
    s.seqs.push_back(seq);
  }
  // pack_rows alternates x and x_next; a padded step always takes the same one, so that its
  // launches (and so its graph) do not depend on how many other steps ran before it.
  if (std::less<const void*>()(s.x_next.get<void>(), s.x.get<void>())) s.x.swap(s.x_next);
  backend_.embed(*token_embd_, s.decode_ids, s.x.get<float>());
  s.num_rows = padded_rows;
}

void LlamaModel::run_layer(std::span<const BatchEntry> batch, int32_t layer) {
  const LlamaConfig& c = config_;
  const int64_t d = c.hidden_dim;
  const int64_t hd = c.head_dim;
  const int64_t q_dim = static_cast<int64_t>(c.num_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(c.num_kv_heads) * hd;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int64_t ff = c.ffn_dim;
  Scratch& s = scratch_;
  kernels::Backend& b = backend_;
  const Layer& L = layers_[static_cast<size_t>(layer)];
  kernels::AttentionShape shape{c.num_heads, c.num_kv_heads,
                                c.head_dim,  qkv_dim,
                                q_dim,       1.0f / std::sqrt(static_cast<float>(hd))};
  shape.round_probabilities_f16 = round_probabilities_f16_;
  shape.kv_type = kv_type_;

  const int64_t num_rows = s.num_rows;
  float* x = s.x.get<float>();
  float* h = s.h.get<float>();
  float* qkv = s.qkv.get<float>();
  float* attn = s.attn.get<float>();
  float* tmp = s.tmp.get<float>();
  b.rms_norm(x, L.attn_norm.get<float>(), num_rows, d, c.rms_norm_eps, h);
  b.matmul(*L.qkv, h, num_rows, qkv);
  if (!L.qkv_bias.empty()) b.add_bias(qkv, L.qkv_bias.get<float>(), num_rows, qkv_dim, qkv_dim);
  // The K heads follow the Q heads in each row: one call rotates both.
  kernels::RopeParams rope;
  rope.freq_base = c.rope_freq_base;
  rope.neox = c.rope_neox;
  rope.freq_factors = rope_freqs_.empty() ? nullptr : rope_freqs_.get<float>();
  b.rope(qkv, s.positions, c.num_heads + c.num_kv_heads, hd, qkv_dim, rope);
  for (size_t k = 0; k < s.packed.size(); ++k) {
    kernels::AttentionSeq& seq = s.seqs[k];
    const float* rows = qkv + seq.first_row * qkv_dim;
    const LayerKv kv = batch[s.packed[k]].cache->store_layer(
        b, layer, rows + q_dim, rows + q_dim + kv_dim, qkv_dim, seq.num_queries, kv_type_);
    seq.kv = kv.view;
    seq.lse = kv.lse;
  }
  b.attention(qkv, s.seqs, shape, attn);
  for (size_t k = 0; k < s.packed.size(); ++k) {
    const kernels::AttentionSeq& seq = s.seqs[k];
    batch[s.packed[k]].cache->finish_layer(b, layer, qkv + seq.first_row * qkv_dim, shape,
                                           seq.num_queries);
  }

  int64_t rows = num_rows;  // rows of x still carried
  if (layer + 1 == static_cast<int32_t>(layers_.size())) {
    // Last layer: only the rows whose logits are wanted matter from here on (as llama.cpp).
    s.out_rows.clear();
    s.out_entry.clear();
    s.out_token.clear();
    s.out_dest.clear();
    int64_t dest = 0;
    for (size_t k = 0; k < s.packed.size(); ++k) {
      const kernels::AttentionSeq& seq = s.seqs[k];
      const BatchEntry& e = batch[s.packed[k]];
      const bool all = e.all_logits || e.row_sink != nullptr;
      for (int32_t t = all ? 0 : seq.num_queries - 1; t < seq.num_queries; ++t) {
        s.out_rows.push_back(seq.first_row + t);
        s.out_entry.push_back(static_cast<int32_t>(s.packed[k]));
        s.out_token.push_back(t);
        const bool returned = e.all_logits || t == seq.num_queries - 1;
        s.out_dest.push_back(returned ? dest++ : -1);
      }
    }
    const auto kept = static_cast<int64_t>(s.out_rows.size());
    // Rows move down only (out_rows ascend), each to a row of its own: no copy overlaps.
    for (int64_t r = 0; r < kept; ++r) {
      const int64_t src = s.out_rows[static_cast<size_t>(r)];
      if (src == r) continue;
      b.copy(attn + r * q_dim, attn + src * q_dim, q_dim * static_cast<int64_t>(sizeof(float)));
      b.copy(x + r * d, x + src * d, d * static_cast<int64_t>(sizeof(float)));
    }
    rows = s.padded_rows > 0 ? s.padded_rows : kept;  // a padded step keeps its bucket to the end
    s.num_rows = rows;
  }
  b.matmul(*L.output, attn, rows, tmp);
  b.add(x, tmp, rows * d);
  b.rms_norm(x, L.ffn_norm.get<float>(), rows, d, c.rms_norm_eps, h);
  b.matmul(*L.gate_up, h, rows, s.gate_up.get<float>());
  b.swiglu(s.gate_up.get<float>(), rows, ff, s.ffn.get<float>());
  b.matmul(*L.down, s.ffn.get<float>(), rows, tmp);
  b.add(x, tmp, rows * d);
}

Status LlamaModel::forward(std::span<const BatchEntry> batch, std::vector<float>& logits) {
  return run_forward(batch, &logits, nullptr, nullptr);
}

Status LlamaModel::forward_candidates(std::span<const BatchEntry> batch, std::vector<float>& logits,
                                      std::vector<kernels::Ranked>& candidates) {
  return run_forward(batch, &logits, nullptr, &candidates);
}

Status LlamaModel::forward_argmax(std::span<const BatchEntry> batch, std::vector<int32_t>& ids) {
  for (const BatchEntry& e : batch) {
    if (e.row_sink != nullptr) {
      return Error{"forward_argmax: an entry has a row sink (its rows need their logits)"};
    }
  }
  return run_forward(batch, nullptr, &ids, nullptr);
}

namespace {

// Ends a backend decode step (Backend::begin_decode_step) once: before the step's results are
// read back, or when the forward pass unwinds.
class DecodeStepScope {
 public:
  DecodeStepScope(kernels::Backend& backend, bool active) : backend_(backend), active_(active) {}
  ~DecodeStepScope() {
    if (!active_) return;
    try {
      backend_.end_decode_step();
    } catch (const std::exception&) {  // already unwinding from the step's own error
    }
  }
  DecodeStepScope(const DecodeStepScope&) = delete;
  DecodeStepScope& operator=(const DecodeStepScope&) = delete;
  void end() {
    if (!active_) return;
    active_ = false;
    backend_.end_decode_step();
  }

 private:
  kernels::Backend& backend_;
  bool active_;
};

}  // namespace

Status LlamaModel::run_forward(std::span<const BatchEntry> batch, std::vector<float>* logits,
                               std::vector<int32_t>* ids,
                               std::vector<kernels::Ranked>* candidates) {
  // Validate everything before touching any cache.
  if (Status st = validate(batch); !st) return st;
  const LlamaConfig& c = config_;
  const int32_t num_layers = static_cast<int32_t>(layers_.size());
  const int64_t d = c.hidden_dim;
  const int64_t q_dim = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t qkv_dim = q_dim + 2 * static_cast<int64_t>(c.num_kv_heads) * c.head_dim;

  Scratch& s = scratch_;
  s.layer_begin.clear();
  s.layer_end.clear();
  s.first_row.assign(batch.size(), -1);
  int64_t num_tokens = 0;
  int32_t first_layer = num_layers, last_layer = 0;  // the call runs [first_layer, last_layer)
  // Layers where the set of entries that run them changes.
  std::vector<bool> repack(static_cast<size_t>(num_layers) + 1, false);
  for (const BatchEntry& e : batch) {
    const int32_t begin = e.layer_begin;
    const int32_t end = e.layer_end == BatchEntry::kAllLayers ? num_layers : e.layer_end;
    s.layer_begin.push_back(begin);
    s.layer_end.push_back(end);
    repack[static_cast<size_t>(begin)] = repack[static_cast<size_t>(end)] = true;
    first_layer = std::min(first_layer, begin);
    last_layer = std::max(last_layer, end);
    num_tokens += static_cast<int64_t>(e.tokens.size());
  }
  kernels::Backend& b = backend_;
  // A pure decode step (every entry one token through every layer, no row sink) may run as a
  // graph at the backend's padded row count (Backend::begin_decode_step).
  const bool pure_decode = std::all_of(batch.begin(), batch.end(), [&](const BatchEntry& e) {
    return e.tokens.size() == 1 && e.layer_begin == 0 &&
           (e.layer_end == BatchEntry::kAllLayers || e.layer_end == num_layers) &&
           e.row_sink == nullptr;
  });
  const int64_t padded = pure_decode ? b.begin_decode_step(num_tokens) : 0;
  DecodeStepScope step(b, padded > 0);
  s.padded_rows = padded;
  const int64_t rows = std::max(num_tokens, padded);
  s.x.reserve<float>(b, rows * d);
  s.x_next.reserve<float>(b, rows * d);
  s.h.reserve<float>(b, rows * d);
  s.qkv.reserve<float>(b, rows * qkv_dim);
  s.attn.reserve<float>(b, rows * q_dim);
  s.tmp.reserve<float>(b, rows * d);
  s.gate_up.reserve<float>(b, rows * 2 * c.ffn_dim);
  s.ffn.reserve<float>(b, rows * c.ffn_dim);

  s.num_rows = 0;
  for (int32_t layer = first_layer; layer < last_layer; ++layer) {
    if (repack[static_cast<size_t>(layer)]) {
      if (padded > 0 && layer == 0) {
        pack_decode_rows(batch, padded);
      } else {
        pack_rows(batch, layer);
      }
    }
    if (s.num_rows > 0) run_layer(batch, layer);
  }
  // Entries that stop here before the last layer park their rows; the others are complete.
  if (last_layer < num_layers) pack_rows(batch, last_layer);
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchEntry& e = batch[i];
    const int32_t n = static_cast<int32_t>(e.tokens.size());
    PendingTokens& pending = e.cache->pending();
    if (s.layer_end[i] < num_layers) {
      pending.num_tokens = n;
      pending.layers_done = s.layer_end[i];
    } else {
      pending = PendingTokens{};  // frees the hidden states of a finished layered prefill
      e.cache->advance(n);
    }
  }

  const int64_t num_out = last_layer == num_layers ? s.num_rows : 0;
  const int64_t num_returned = num_out == 0 ? 0
                                            : std::count_if(s.out_dest.begin(), s.out_dest.end(),
                                                            [](int64_t v) { return v >= 0; });
  // forward_candidates: a returned row of an entry with num_candidates leaves `logits` for
  // `candidates`; the other returned rows are renumbered among themselves.
  // The output rows that belong to entries: all of them, or in a padded decode step those before
  // the padding (run_layer lists them in out_dest / out_entry).
  const int64_t num_kept = num_out == 0 ? 0 : static_cast<int64_t>(s.out_dest.size());
  int64_t num_whole = num_returned, num_pairs = 0;
  s.out_pairs.assign(static_cast<size_t>(num_out), -1);
  if (candidates != nullptr) {
    num_whole = 0;
    for (int64_t r = 0; r < num_kept; ++r) {
      int64_t& dest = s.out_dest[static_cast<size_t>(r)];
      if (dest < 0) continue;
      const int32_t k =
          batch[static_cast<size_t>(s.out_entry[static_cast<size_t>(r)])].num_candidates;
      if (k > 0) {
        s.out_pairs[static_cast<size_t>(r)] = num_pairs;
        num_pairs += k;
        dest = -1;
      } else {
        dest = num_whole++;
      }
    }
    candidates->resize(static_cast<size_t>(num_pairs));
  }
  if (ids != nullptr) {
    ids->resize(static_cast<size_t>(num_returned));
  } else {
    logits->resize(static_cast<size_t>(num_whole * c.vocab_size));
  }
  if (num_out == 0) return Status::Ok();
  b.rms_norm(s.x.get<float>(), output_norm_.get<float>(), num_out, d, c.rms_norm_eps,
             s.h.get<float>());
  const kernels::Weight& output = output_ ? *output_ : *token_embd_;
  // num_out − num_returned rows are a padded step's padding (no row sinks in a decode step), or
  // rows for the sinks only.
  if (ids != nullptr) {  // no row sinks (forward_argmax): every real output row is returned
    float* out = s.logits.reserve<float>(b, num_out * c.vocab_size);
    b.matmul(output, s.h.get<float>(), num_out, out);
    step.end();
    b.argmax_rows(out, num_returned, c.vocab_size, ids->data());
    return Status::Ok();
  }
  if (padded == 0 && num_returned != num_out) {
    return output_through_sinks(batch, num_out, *logits, candidates);
  }
  // Logits go to the host; a backend in host memory writes whole rows there directly.
  float* out = b.host_memory() && padded == 0 && num_pairs == 0
                   ? logits->data()
                   : s.logits.reserve<float>(b, num_out * c.vocab_size);
  b.matmul(output, s.h.get<float>(), num_out, out);
  step.end();
  if (num_pairs > 0) {
    output_candidates(batch, num_kept, out, *logits, *candidates);
    return Status::Ok();
  }
  if (out != logits->data()) {
    b.download(logits->data(), out,
               num_returned * c.vocab_size * static_cast<int64_t>(sizeof(float)));
  }
  return Status::Ok();
}

// The output matmul in chunks of kRowChunk rows when some entry sends every row to a sink: each
// chunk's rows go to their entries' sinks (runs of one entry in one call) and the returned rows
// into `logits`, so no more than kRowChunk × vocab floats of logits exist at once.
Status LlamaModel::output_through_sinks(std::span<const BatchEntry> batch, int64_t num_out,
                                        std::vector<float>& logits,
                                        std::vector<kernels::Ranked>* candidates) {
  Scratch& s = scratch_;
  kernels::Backend& b = backend_;
  const int64_t vocab = config_.vocab_size;
  const int64_t d = config_.hidden_dim;
  const int64_t chunk = std::min(num_out, kRowChunk);
  float* device = s.logits.reserve<float>(b, chunk * vocab);
  std::vector<float> host;
  if (!b.host_memory()) host.resize(static_cast<size_t>(chunk * vocab));
  for (int64_t r0 = 0; r0 < num_out; r0 += chunk) {
    const int64_t rows = std::min(chunk, num_out - r0);
    b.matmul(output_ ? *output_ : *token_embd_, s.h.get<float>() + r0 * d, rows, device);
    const float* out = device;
    if (!b.host_memory()) {
      b.download(host.data(), device, rows * vocab * static_cast<int64_t>(sizeof(float)));
      out = host.data();
    }
    for (int64_t r = 0; r < rows;) {
      const size_t at = static_cast<size_t>(r0 + r);
      const BatchEntry& e = batch[static_cast<size_t>(s.out_entry[at])];
      int64_t run = 1;
      while (r + run < rows && s.out_entry[at + static_cast<size_t>(run)] == s.out_entry[at]) ++run;
      if (e.row_sink != nullptr) {
        (*e.row_sink)(s.out_token[at], static_cast<int32_t>(run), out + r * vocab);
      }
      for (int64_t k = 0; k < run; ++k) {
        // A row wanted as candidates is on the host here anyway: reduced where it is.
        const int64_t pairs = s.out_pairs[at + static_cast<size_t>(k)];
        if (pairs >= 0) {
          kernels::topk_row(out + (r + k) * vocab, vocab, e.num_candidates,
                            candidates->data() + pairs);
        }
        const int64_t dest = s.out_dest[at + static_cast<size_t>(k)];
        if (dest < 0) continue;
        std::copy_n(out + (r + k) * vocab, vocab, logits.data() + dest * vocab);
      }
      r += run;
    }
  }
  return Status::Ok();
}

void LlamaModel::output_candidates(std::span<const BatchEntry> batch, int64_t num_rows,
                                   const float* out, std::vector<float>& logits,
                                   std::vector<kernels::Ranked>& candidates) {
  Scratch& s = scratch_;
  kernels::Backend& b = backend_;
  const int64_t vocab = config_.vocab_size;
  // One topk_rows call at the largest k asked; each row keeps its own k of them (a prefix of the
  // rank order is the smaller k's answer).
  s.pair_rows.clear();
  int32_t k_max = 0;
  for (int64_t r = 0; r < num_rows; ++r) {
    if (s.out_pairs[static_cast<size_t>(r)] < 0) continue;
    s.pair_rows.push_back(static_cast<int32_t>(r));
    k_max = std::max(
        k_max, batch[static_cast<size_t>(s.out_entry[static_cast<size_t>(r)])].num_candidates);
  }
  s.ranked.resize(s.pair_rows.size() * static_cast<size_t>(k_max));
  b.topk_rows(out, vocab, s.pair_rows, k_max, s.ranked.data());
  for (size_t j = 0; j < s.pair_rows.size(); ++j) {
    const auto r = static_cast<size_t>(s.pair_rows[j]);
    const int32_t k = batch[static_cast<size_t>(s.out_entry[r])].num_candidates;
    std::copy_n(s.ranked.begin() + static_cast<std::ptrdiff_t>(j * static_cast<size_t>(k_max)), k,
                candidates.begin() + s.out_pairs[r]);
  }
  // The whole rows, a run of consecutive ones (their destinations are consecutive too) at a time.
  for (int64_t r = 0; r < num_rows;) {
    const int64_t dest = s.out_dest[static_cast<size_t>(r)];
    if (dest < 0) {
      ++r;
      continue;
    }
    int64_t run = 1;
    while (r + run < num_rows && s.out_dest[static_cast<size_t>(r + run)] >= 0) ++run;
    b.download(logits.data() + dest * vocab, out + r * vocab,
               run * vocab * static_cast<int64_t>(sizeof(float)));
    r += run;
  }
}

}  // namespace lightserve::model
