// How the forward pass reaches one sequence's KV cache. Two implementations: SequenceCache
// (contiguous, every layer full: the plain model) and HybridSequence (LightTransfer: full layers
// paged in the arena's blocks, lazy layers in a slot ring, chosen during prefill).
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "model/status.h"

namespace lightserve::model {

struct LayerKv {
  kernels::KvView view;  // what attention reads for this layer
  float* lse = nullptr;  // filled by attention when the sequence needs it (lazy ratios)
};

class SequenceKv {
 public:
  virtual ~SequenceKv() = default;
  virtual int32_t size() const = 0;      // tokens whose K/V are cached
  virtual int32_t capacity() const = 0;  // tokens it can hold

  // Whether `n` new tokens can be appended in one forward call; checked before any state changes.
  virtual Status check_append(int32_t n) const = 0;

  // Stores the K and V rows (f32, src_stride apart) of tokens [size(), size() + n) of `layer`
  // and returns where attention reads this layer's keys and values.
  virtual LayerKv store_layer(kernels::Backend& backend, int32_t layer, const float* k,
                              const float* v, int64_t src_stride, int32_t n) = 0;

  // After this layer's attention over the n new tokens: q holds their query rows (shape.q_stride
  // apart). Prefill decisions (lazy ratios, cuts) happen here.
  virtual void finish_layer(kernels::Backend& backend, int32_t layer, const float* q,
                            const kernels::AttentionShape& shape, int32_t n) = 0;

  // After every layer: the n tokens are cached.
  virtual void advance(int32_t n) = 0;
};

}  // namespace lightserve::model
