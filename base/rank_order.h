// The one definition of the order a logits row's tokens rank in, shared by the sampler's top-k
// (sampling/sampler.h), the backends' top-k (kernels/topk.h: the host's and the CUDA kernel's) and
// the executor interface that carries their candidates (scheduler/executor.h): value descending,
// index ascending among equal values (-0 equals +0), and NaN where std::max_element leaves it: a
// NaN at index 0 first (a scan from the first value never replaces it), any other NaN last (it is
// never larger than anything). A strict total order whose first is always argmax(row).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LS_HOST_DEVICE __host__ __device__
#else
#define LS_HOST_DEVICE
#endif

namespace lightserve {

// One token of a row: its index (the token id) and its value (the logit), bit for bit.
struct Ranked {
  int32_t id;
  float value;
};

// The order as an integer key: a before b iff key(a) > key(b), or the keys are equal and a's
// index is smaller. Numbers order as floats (-0 and +0 both give 0x80000000), a NaN at index 0
// keys 0xFFFFFFFF (above every number), any other NaN 0 (below); a number's key is never either.
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

inline bool ranks_before(const Ranked& a, const Ranked& b) {
  const uint32_t ka = rank_key(a.value, a.id), kb = rank_key(b.value, b.id);
  return ka > kb || (ka == kb && a.id < b.id);
}

}  // namespace lightserve
