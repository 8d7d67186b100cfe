// One request's KV under LightTransfer (docs/design.md §4–5): prefill runs layer by layer over the
// whole prompt with exact attention on a one-layer scratch; after each layer the request decides
// whether the layer keeps full KV (copied into a full lane's pages) or becomes lazy (cut to the
// sinks and the last `window` tokens in a lazy lane's pages, a ring). In online mode the decision
// is the online top-P of lazy ratios (LazySelector), so at most P full lanes plus the scratch layer
// ever hold full-length KV. Decode reads full layers through their page tables and lazy layers
// through theirs as a ring (paged kRing views).
//
// The prefill may span several forward calls (layered prefill: LlamaModel::forward over a layer
// range parks the prompt's hidden states in pending()): the scratch, the selector and the partial
// layer map wait between calls, layers arrive in order, and size() stays 0 until the last layer
// has run. The decisions are the same as in one call, bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "memory/kv_allocation.h"
#include "model/config.h"
#include "model/kv_arena.h"
#include "model/lighttransfer.h"
#include "model/sequence_kv.h"

namespace lightserve::model {

class HybridSequence final : public SequenceKv {
 public:
  // Reserves room for `token_capacity` tokens in `arena` (which must outlive the sequence) under
  // the footprint `settings.mode` needs. An Error when the arena lacks the room or the mode
  // cannot run in this arena.
  static Result<std::unique_ptr<HybridSequence>> create(KvArena& arena, const LlamaConfig& config,
                                                        const LightTransferSettings& settings,
                                                        int32_t token_capacity);
  // Works on `allocation`, owned elsewhere (the engine): it must come from `arena`'s manager and
  // stay at the same address until the sequence is destroyed; the sequence neither grows it
  // through the engine's back nor releases it. The allocation's footprint decides the mode: a
  // full footprint runs plain full attention and a streaming one every layer lazy, whatever
  // settings.mode says (the per-request overrides); a hybrid one runs settings.mode, which must
  // then be test, static or random with the footprint's number of full layers.
  static Result<std::unique_ptr<HybridSequence>> attach(KvArena& arena, const LlamaConfig& config,
                                                        const LightTransferSettings& settings,
                                                        memory::KvAllocation& allocation);
  // A copy of `parent` (whose prefill is complete) on `allocation` (attach's rules; the parent's
  // footprint and at least its size in capacity): every computed token's K and V in every lane
  // (whole pages through Backend::copy_runs_f16: device to device on a GPU), the layer map and
  // the lazy ratios, so the copy decodes exactly as the parent would. For the samples of one
  // prompt sharing its prefill (scheduler/executor.h, Executor::fork).
  static Result<std::unique_ptr<HybridSequence>> fork(kernels::Backend& backend,
                                                      const HybridSequence& parent,
                                                      memory::KvAllocation& allocation);
  ~HybridSequence() override;

  int32_t size() const override { return size_; }
  int32_t capacity() const override { return static_cast<int32_t>(kv_->token_capacity()); }
  Status check_append(int32_t n) const override;
  LayerKv store_layer(kernels::Backend& backend, int32_t layer, const float* k, const float* v,
                      int64_t src_stride, int32_t n, kernels::DType kv_type) override;
  void finish_layer(kernels::Backend& backend, int32_t layer, const float* q,
                    const kernels::AttentionShape& shape, int32_t n) override;
  void advance(int32_t n) override;

  // Grows the reservation to `token_capacity` tokens; false when the arena has no room. (An
  // attached sequence's allocation is normally grown by its owner instead.)
  bool reserve(int32_t token_capacity);

  const memory::LayerMap& layer_map() const { return kv_->layer_map(); }
  const LightTransferSettings& settings() const { return settings_; }  // the mode that runs
  // Lazy ratio of each layer measured at prefill (online mode; NaN otherwise).
  const std::vector<float>& lazy_ratios() const { return ratios_; }
  // The per-head ratios behind them, [layer × num_heads] (settings().score picks the queries).
  const std::vector<float>& head_lazy_ratios() const { return head_ratios_; }
  // Bytes of arena pages this request holds now, and the most it held plus prefill
  // scratch at any moment: measured from its allocation, not computed from a formula.
  int64_t kv_bytes() const;
  int64_t peak_kv_bytes() const { return peak_bytes_; }
  int32_t peak_full_length_layers() const { return peak_full_layers_; }

 private:
  HybridSequence(KvArena& arena, const LlamaConfig& config, const LightTransferSettings& settings);
  struct ForkOf {
    const HybridSequence& parent;
  };
  explicit HybridSequence(ForkOf fork);  // the parent's settings, plan and ratios; no KV yet
  void init_plan(const memory::Footprint& footprint);
  // Copies tokens [begin, end) of one layer's K and V from rows src(values, t) to rows
  // dst(values, t), runs of consecutive rows coalesced, in one backend call.
  template <typename Src, typename Dst>
  void move_tokens(kernels::Backend& b, int32_t begin, int32_t end, Src src, Dst dst);
  void place_full(kernels::Backend& b, int32_t layer, int32_t n);
  void place_lazy_from_scratch(kernels::Backend& b, int32_t layer, int32_t n);
  void demote(kernels::Backend& b, int32_t layer, int32_t n);
  uint16_t* full_row(bool values, int32_t lane, int32_t token);
  uint16_t* lazy_row(bool values, int32_t lane, int32_t token);
  uint16_t* scratch_row(bool values, int32_t token) const {
    return (values ? scratch_v_ : scratch_k_).get<uint16_t>() + token * row_;
  }
  kernels::KvView full_view(int32_t lane);
  kernels::KvView lazy_view(int32_t lane);
  void note_peak(int64_t extra_bytes, int32_t full_length_layers);

  KvArena& arena_;
  int64_t row_;
  int32_t num_heads_;
  LightTransferSettings settings_;
  memory::KvAllocation owned_;          // create(): the sequence's own; attach(): empty
  memory::KvAllocation* kv_ = nullptr;  // the allocation in use (&owned_ or the attached one)
  int32_t size_ = 0;
  std::vector<bool> planned_lazy_;  // modes with a lazy set known before prefill
  std::unique_ptr<LazySelector> selector_;
  std::vector<float> ratios_;
  std::vector<float> head_ratios_;
  // Prefill scratch (backend memory) for the layer being decided: the whole prompt's K and V
  // (scratch_rows_ rows each), and its LSE.
  kernels::Buffer scratch_k_, scratch_v_, lse_;
  int64_t scratch_rows_ = 0;
  int64_t peak_bytes_ = 0;
  int32_t peak_full_layers_ = 0;
};

}  // namespace lightserve::model
