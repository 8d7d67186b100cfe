// A row's k best values in rank order (Backend::topk_rows): what a sampler that reads no more of
// a logits row than its top few tokens needs, so a GPU sends back k (id, value) pairs per row
// instead of the whole vocabulary. The rank order is sampling::ranks_before's (the sampler's
// top-k), written here as an integer key so that the host and the CUDA kernel
// (kernels/cuda/topk.cu) share one definition of it.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LS_HOST_DEVICE __host__ __device__
#else
#define LS_HOST_DEVICE
#endif

namespace lightserve::kernels {

// One of a row's best values: its index in the row and the value itself (bit for bit).
struct Ranked {
  int32_t id;
  float value;
};

// The most a topk_rows call returns per row (the CUDA kernel sizes its shared memory by it).
inline constexpr int32_t kMaxTopK = 256;

// The rank order of row value `value` at index `index`: a before b iff key(a) > key(b), or the keys
// are equal and a's index is smaller. Numbers order as floats (-0 as +0: both give 0x80000000),
// a NaN at index 0 above everything (std::max_element never replaces a first NaN) and any other
// NaN below everything (it never replaces anything). So the first in rank order is always
// std::max_element's pick, and a number's key is never 0 or 0xFFFFFFFF.
LS_HOST_DEVICE inline uint32_t rank_key(float value, int64_t index) {
  if (value != value) return index == 0 ? 0xFFFFFFFFu : 0u;
  if (value == 0.0f) value = 0.0f;
  uint32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(value);
#else
  std::memcpy(&bits, &value, sizeof bits);
#endif
  return (bits & 0x80000000u) != 0 ? ~bits : (bits | 0x80000000u);
}

// The host's top-k of one row of `width` values (host memory): out[0, min(k, width)) its best in
// rank order, out[width, k) (when k > width) {-1, NaN}. One pass, O(width + k · insertions).
void topk_row(const float* row, int64_t width, int32_t k, Ranked* out);

}  // namespace lightserve::kernels
