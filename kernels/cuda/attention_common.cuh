// What the device side of CudaAttention shares between its translation units: the sequence
// descriptor and key addressing of backend.h's KvView layouts, the warp-level scoring helpers of
// the decode and lazy-ratio kernels, the (head_dim, group) dispatch and the checks of a call.
//   cuda_attention.cu  CudaAttention, the decode (split-K) path
//   flash_prefill.cu   the prefill path (fused causal flash attention on tensor cores)
//   lazy_ratio.cu      LightTransfer's lazy ratio
#pragma once

#include <cuda_fp16.h>

#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/kv_type.cuh"

namespace lightserve::kernels::cuda {

constexpr int kThreads = 128;  // split, merge and lazy-ratio kernels
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 8;  // query heads per KV head the kernels are built for
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

enum : int32_t { kKindContiguous = 0, kKindPaged = 1, kKindRing = 2 };

// One sequence as the device sees it (no default member initializers: it lives in __shared__).
struct SeqDesc {
  const uint16_t* k;
  const uint16_t* v;
  float* lse;  // [num_queries × heads] or null
  int64_t first_row;
  int64_t row_stride;
  int64_t block_stride;
  int32_t kind;
  int32_t block_size;
  int32_t sink;
  int32_t window;
  int32_t num_queries;
  int32_t first_pos;
  int32_t table_offset;  // kPaged, paged kRing (block_size > 0): its table in the packed tables
  int32_t nsplit;        // key splits per query
  int32_t block_base;    // its first split block (= partial slot) in the split grid
  int32_t query_base;    // its first query in the merge grid
  int32_t vec;           // k, v and strides 16-byte aligned: vector loads
  int32_t bf16;          // the cache holds bf16 (else f16): AttentionShape::kv_type
};

__host__ __device__ inline int32_t imin(int32_t a, int32_t b) {
  return a < b ? a : b;
}
__host__ __device__ inline int32_t imax(int32_t a, int32_t b) {
  return a > b ? a : b;
}

// The keys a query attends, as `count` virtual indices j: j < sink_keys is token j, the rest
// token window_begin + (j − sink_keys). Full views: sink_keys 0, window_begin 0, tokens 0..p.
struct KeySpan {
  int32_t sink_keys;
  int32_t window_begin;
  int32_t count;
};

// The mask of attention_impl.inc's KeyMask: a ring attends {t ≤ p : t < sink or t > p − window}.
__host__ __device__ inline KeySpan attended_span(const SeqDesc& d, int32_t p) {
  if (d.kind != kKindRing) return {0, 0, p + 1};
  const int32_t sink_keys = imin(d.sink, p + 1);
  const int32_t window_begin = imax(d.sink, p - d.window + 1);
  return {sink_keys, window_begin, sink_keys + imax(0, p + 1 - window_begin)};
}

__host__ __device__ inline int32_t span_token(const KeySpan& s, int32_t j) {
  return j < s.sink_keys ? j : s.window_begin + (j - s.sink_keys);
}

// Element offset of token t's row from d.k (and d.v): backend.h's KvView layouts.
__host__ __device__ inline int64_t token_row(const SeqDesc& d, const int32_t* tables, int32_t t) {
  if (d.kind == kKindRing && t >= d.sink) t = d.sink + (t - d.sink) % d.window;  // its ring row
  if (d.kind == kKindPaged || (d.kind == kKindRing && d.block_size > 0)) {
    return static_cast<int64_t>(tables[d.table_offset + t / d.block_size]) * d.block_stride +
           static_cast<int64_t>(t % d.block_size) * d.row_stride;
  }
  return static_cast<int64_t>(t) * d.row_stride;
}

// ---------------------------------------------------------------------------------------------
// Device helpers

// N consecutive cached values (f16, or bf16 when `bf16`) at p to f32; `vec`: p is aligned to
// 2·N bytes.
template <int N>
__device__ __forceinline__ void load_kv(const uint16_t* p, bool vec, bool bf16, float* f) {
  auto half_bits_to_float = [bf16](uint32_t bits) { return kv_bits_to_float(bits, bf16); };
  if (vec) {
    if constexpr (N == 8) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
      const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        f[2 * i] = half_bits_to_float(w[i]);
        f[2 * i + 1] = half_bits_to_float(w[i] >> 16);
      }
      return;
    } else if constexpr (N == 4) {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
      f[0] = half_bits_to_float(u.x);
      f[1] = half_bits_to_float(u.x >> 16);
      f[2] = half_bits_to_float(u.y);
      f[3] = half_bits_to_float(u.y >> 16);
      return;
    } else if constexpr (N == 2) {
      const uint32_t u = __ldg(reinterpret_cast<const unsigned int*>(p));
      f[0] = half_bits_to_float(u);
      f[1] = half_bits_to_float(u >> 16);
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < N; ++e)
    f[e] = half_bits_to_float(__ldg(reinterpret_cast<const unsigned short*>(p) + e));
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Scoring layout shared by the split and lazy-ratio kernels: a key is read by a group of
// LPK = HD/16 consecutive lanes, each holding 16 of its dimensions as two runs of 8:
// dims (c·LPK + kl)·8 .. +8 for c = 0, 1 (kl: the lane within the group). A warp scores
// 32/LPK keys at a time; each load instruction reads 64 contiguous bytes of every key.
template <int HD>
struct Lanes {
  static_assert(HD == 64 || HD == 128);
  static constexpr int kPerKey = HD / 16;
  static constexpr int kKeysPerWarp = 32 / kPerKey;
  static constexpr int kKeysPerBlock = kWarps * kKeysPerWarp;
  __host__ __device__ static int dim(int c, int kl) { return (c * kPerKey + kl) * 8; }
};

// This lane's 16 dimensions of the G query heads at qrow (consecutive heads, HD apart), rounded
// to the cache type (f16, or bf16) as the CPU's load_queries does.
template <int HD, int G>
__device__ __forceinline__ void load_query(const float* qrow, int kl, bool bf16,
                                           float (&qr)[G][16]) {
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const float* src = qrow + g * HD + Lanes<HD>::dim(c, kl);
#pragma unroll
      for (int e = 0; e < 8; ++e) qr[g][c * 8 + e] = round_to_kv(src[e], bf16);
    }
  }
}

// This lane's 16 dimensions of the key row at kp (the KV head's first element).
template <int HD>
__device__ __forceinline__ void load_key(const uint16_t* kp, int kl, bool vec, bool bf16,
                                         float (&k)[16]) {
  load_kv<8>(kp + Lanes<HD>::dim(0, kl), vec, bf16, k);
  load_kv<8>(kp + Lanes<HD>::dim(1, kl), vec, bf16, k + 8);
}

// Full dot products q_g·k for the G heads, left in every lane of the key's group. All 32 lanes
// must call it (shuffles).
template <int HD, int G>
__device__ __forceinline__ void key_dots(const float (&qr)[G][16], const float (&k)[16],
                                         float (&dot)[G]) {
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < 16; ++e) s = fmaf(qr[g][e], k[e], s);
    dot[g] = s;
  }
#pragma unroll
  for (int o = 1; o < Lanes<HD>::kPerKey; o <<= 1) {
#pragma unroll
    for (int g = 0; g < G; ++g) dot[g] += __shfl_xor_sync(kFullMask, dot[g], o);
  }
}

// Calls Launch<HD, G>::run(args...) for the runtime head_dim and group (checked beforehand).
template <int HD, template <int, int> class Launch, typename... Args>
void dispatch_group(int group, Args&&... args) {
  switch (group) {
    case 1:
      Launch<HD, 1>::run(args...);
      break;
    case 2:
      Launch<HD, 2>::run(args...);
      break;
    case 3:
      Launch<HD, 3>::run(args...);
      break;
    case 4:
      Launch<HD, 4>::run(args...);
      break;
    case 5:
      Launch<HD, 5>::run(args...);
      break;
    case 6:
      Launch<HD, 6>::run(args...);
      break;
    case 7:
      Launch<HD, 7>::run(args...);
      break;
    case 8:
      Launch<HD, 8>::run(args...);
      break;
    default:
      throw std::logic_error("CudaAttention: unchecked group");
  }
}

template <template <int, int> class Launch, typename... Args>
void dispatch(int head_dim, int group, Args&&... args) {
  if (head_dim == 64) {
    dispatch_group<64, Launch>(group, args...);
  } else {
    dispatch_group<128, Launch>(group, args...);
  }
}

inline int check_shape(const AttentionShape& s, const char* op) {
  const std::string where = std::string("CUDA ") + op + ": ";
  if (s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0) {
    throw std::invalid_argument(where + "heads (" + std::to_string(s.heads) +
                                ") must be a positive multiple of kv_heads (" +
                                std::to_string(s.kv_heads) + ")");
  }
  const int group = s.heads / s.kv_heads;
  if (group > kMaxGroup) {
    throw std::invalid_argument(where + std::to_string(group) +
                                " query heads per KV head; at most " + std::to_string(kMaxGroup) +
                                " are supported");
  }
  if (s.head_dim != 64 && s.head_dim != 128) {
    throw std::invalid_argument(where + "head_dim " + std::to_string(s.head_dim) +
                                " is not supported (64 or 128)");
  }
  return group;
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// The device descriptor of a view over a cache of type kv_type (first_row, queries, splits
// filled in by the caller); checks what the kernels rely on.
inline SeqDesc describe(const KvView& kv, DType kv_type, const char* op) {
  const std::string where = std::string("CUDA ") + op + ": ";
  if (!is_kv_type(kv_type)) throw std::invalid_argument(where + "kv_type must be f16 or bf16");
  SeqDesc d{};
  d.bf16 = kv_type == DType::kBF16 ? 1 : 0;
  d.k = kv.k;
  d.v = kv.v;
  d.row_stride = kv.row_stride;
  switch (kv.kind) {
    case KvView::Kind::kContiguous:
      d.kind = kKindContiguous;
      break;
    case KvView::Kind::kPaged:
      if (kv.block_size <= 0 || kv.block_table == nullptr) {
        throw std::invalid_argument(where + "a paged view needs a block table and block_size > 0");
      }
      d.kind = kKindPaged;
      d.block_size = kv.block_size;
      d.block_stride = kv.block_stride;
      break;
    case KvView::Kind::kRing:
      if (kv.window <= 0 || kv.sink < 0) {
        throw std::invalid_argument(where + "a ring view needs window > 0 and sink ≥ 0");
      }
      d.kind = kKindRing;
      d.sink = kv.sink;
      d.window = kv.window;
      if (kv.block_table != nullptr) {  // a paged ring (the KV arena's lazy layers)
        if (kv.block_size <= 0) {
          throw std::invalid_argument(where + "a paged ring view needs block_size > 0");
        }
        d.block_size = kv.block_size;
        d.block_stride = kv.block_stride;
      }
      break;
  }
  d.vec = aligned16(kv.k) && aligned16(kv.v) && kv.row_stride % 8 == 0 &&
          (d.block_size == 0 || kv.block_stride % 8 == 0);
  return d;
}

// flash_prefill.cu: whether a sequence takes the prefill path, and that path for one sequence
// (asynchronous, on ctx.stream).
bool takes_prefill_path(const AttentionSeq& seq);
void flash_prefill(CudaContext& ctx, const float* q, const AttentionSeq& seq,
                   const AttentionShape& shape, int group, float* out);

// lazy_ratio.cu: Backend::lazy_ratio, with `tables` and `parts` as its device scratch; returns
// after the device has computed it (head_ratios: host memory or null).
float device_lazy_ratio(CudaContext& ctx, DeviceScratch& tables, DeviceScratch& parts,
                        const float* q, const float* lse, const KvView& kv, int32_t n,
                        int32_t w_last, int32_t sink, int32_t window, const AttentionShape& shape,
                        LazyScore score, float* head_ratios);

}  // namespace lightserve::kernels::cuda
