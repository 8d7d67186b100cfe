// How the forward pass reaches one sequence's KV cache. Two implementations: SequenceCache
// (contiguous, every layer full: the plain model) and HybridSequence (LightTransfer: full layers
// and lazy layers paged in the arena's one page pool, a lazy layer as a ring of sink + window
// rows; which layers are lazy is chosen during prefill).
//
// A sequence also parks the hidden states of a forward pass stopped between layers (layered
// prefill, LlamaModel::forward with a layer range): they belong to the KV they are building, so
// they live and die with it.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "kernels/backend.h"

namespace lightserve::model {

struct LayerKv {
  kernels::KvView view;  // what attention reads for this layer
  float* lse = nullptr;  // filled by attention when the sequence needs it (lazy ratios)
};

// New tokens that have run through layers [0, layers_done) only: the residual stream after layer
// layers_done − 1 (num_tokens rows of hidden_dim floats, backend memory). Their K/V of those
// layers are already stored (or, in a HybridSequence prefill, already decided); size() counts
// them only when the last layer has run.
struct PendingTokens {
  int32_t num_tokens = 0;
  int32_t layers_done = 0;  // 0: nothing pending
  kernels::Buffer hidden;

  bool empty() const { return layers_done == 0; }
};

class SequenceKv {
 public:
  virtual ~SequenceKv() = default;
  virtual int32_t size() const = 0;      // tokens whose K/V are cached
  virtual int32_t capacity() const = 0;  // tokens it can hold

  // Whether `n` new tokens can be appended in one forward call; checked before any state changes.
  virtual Status check_append(int32_t n) const = 0;

  // Stores the K and V rows (f32, src_stride apart) of tokens [size(), size() + n) of `layer`,
  // converted to the cache type kv_type (f16 or bf16, the same for every call on a sequence),
  // and returns where attention reads this layer's keys and values.
  virtual LayerKv store_layer(kernels::Backend& backend, int32_t layer, const float* k,
                              const float* v, int64_t src_stride, int32_t n,
                              kernels::DType kv_type) = 0;

  // After this layer's attention over the n new tokens: q holds their query rows (shape.q_stride
  // apart). Prefill decisions (lazy ratios, cuts) happen here.
  virtual void finish_layer(kernels::Backend& backend, int32_t layer, const float* q,
                            const kernels::AttentionShape& shape, int32_t n) = 0;

  // After every layer: the n tokens are cached.
  virtual void advance(int32_t n) = 0;

  // Tokens of an unfinished forward pass (LlamaModel::forward reads and writes it; the owner of
  // the sequence only observes it).
  const PendingTokens& pending() const { return pending_; }
  PendingTokens& pending() { return pending_; }

 private:
  PendingTokens pending_;
};

}  // namespace lightserve::model
