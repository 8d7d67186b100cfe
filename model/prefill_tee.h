// One forward pass feeding the prefills of several sequences (the evaluation's trick for comparing
// LightTransfer modes on the same prompt).
//
// LightTransfer's prefill is exact attention in every mode (docs/design.md §4: a lazy layer is cut
// to its sinks and window only after that layer has run over the whole prompt), so every mode's
// HybridSequence sees the same K, V and log-sum-exps during its prefill; the modes differ only in
// what each layer keeps afterwards and in the decode. PrefillTee hands one forward pass's K/V and
// LSE to every child, each of which decides and cuts as it would alone: the children end up
// bit-identical to separately prefilled sequences (tests/model/prefill_tee_test.cpp).
//
// Prefill only (one forward call over the whole prompt, children empty). Attention reads the first
// child's view, which during a prefill is the prompt's exact K/V as every child holds it.
#pragma once

#include <cstdint>
#include <vector>

#include "model/sequence_kv.h"

namespace lightserve::model {

class PrefillTee final : public SequenceKv {
 public:
  // `children` must outlive the tee; num_heads: query heads (the LSE rows' width).
  PrefillTee(std::vector<SequenceKv*> children, int32_t num_heads);

  int32_t size() const override;
  int32_t capacity() const override;
  Status check_append(int32_t n) const override;
  LayerKv store_layer(kernels::Backend& backend, int32_t layer, const float* k, const float* v,
                      int64_t src_stride, int32_t n, kernels::DType kv_type) override;
  void finish_layer(kernels::Backend& backend, int32_t layer, const float* q,
                    const kernels::AttentionShape& shape, int32_t n) override;
  void advance(int32_t n) override;

 private:
  std::vector<SequenceKv*> children_;
  int32_t num_heads_;
  std::vector<float*> child_lse_;  // where each child wants this layer's LSE (null: not needed)
  kernels::Buffer lse_;            // backend memory
};

}  // namespace lightserve::model
