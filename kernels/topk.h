// A row's k best values in rank order (Backend::topk_rows): what a sampler that reads no more of
// a logits row than its top few tokens needs, so a GPU sends back k (id, value) pairs per row
// instead of the whole vocabulary, in the rank order of base/rank_order.h (the sampler's top-k
// order), whose integer key the host and the CUDA kernel (kernels/cuda/topk.cu) both use.
#pragma once

#include <cstdint>

#include "base/rank_order.h"

namespace lightserve::kernels {

using lightserve::rank_key;  // the rank order (base/rank_order.h)
using lightserve::Ranked;

// The most a topk_rows call returns per row (the CUDA kernel sizes its shared memory by it).
inline constexpr int32_t kMaxTopK = 256;

// The host's top-k of one row of `width` values (host memory): out[0, min(k, width)) its best in
// rank order, out[width, k) (when k > width) {-1, NaN}. One pass, O(width + k · insertions).
void topk_row(const float* row, int64_t width, int32_t k, Ranked* out);

}  // namespace lightserve::kernels
