// CudaAttention: Backend::attention and Backend::lazy_ratio on the device, with the semantics of
// the CPU oracle (kernels/cpu/attention_impl.inc): queries rounded to f16, scores
// scale · Σ q·k accumulated in f32, lse = the natural log-sum-exp of the scaled scores, GQA
// (query head h reads KV head h / (heads / kv_heads)), causal and streaming (ring) masks.
//
// Two paths, chosen per sequence:
//  - Prefill (kContiguous keys and at least kPrefillMinQueries queries): tensor cores through
//    cuBLAS, one sequence at a time in query chunks: S = scale · Q·Kᵀ (f16 → f32), a row softmax
//    with the causal mask writing f16 probabilities P and lse, then O = P·V (f16 → f32) straight
//    into the output rows. P is always rounded to f16 — llama.cpp's round_probabilities_f16
//    numerics, whether or not the flag is set.
//  - Everything else (decode, short chunks, paged and ring views): split-K flash decoding. A block
//    scores one key split of one query for the `group` query heads of one KV head (online softmax
//    in f32) and writes a partial (max, sum, unnormalized output); a merge kernel combines the
//    splits. Probabilities stay f32 here: round_probabilities_f16 is honoured only by the prefill
//    path (rounding needs the global max and sum before any value is weighted, i.e. a second pass
//    over the keys); the difference is within the tests' tolerances.
//
// Host inputs (the AttentionSeq array and its block tables) are packed into one host buffer per
// call and copied with one pinned-staged cudaMemcpyAsync (CudaContext::upload_small); nothing in
// attention() waits for the device.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"

namespace lightserve::kernels::cuda {
namespace {

constexpr int kThreads = 128;  // split, merge and lazy-ratio kernels
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 256;     // keys a split block scores per shared-memory pass
constexpr int kMinSplit = 64;   // smallest key split of the decode path
constexpr int kMaxGroup = 8;    // query heads per KV head the kernels are built for
constexpr int kPrefillMinQueries = 64;
// Bytes of S (f32) + P (f16) per prefill chunk: 8K-token prompts of 9 heads in 1K-query chunks,
// which also skip most of the masked upper triangle.
constexpr int64_t kScoreBudget = int64_t{1} << 29;
constexpr int kSoftmaxThreads = 256;
constexpr int kRatioSplit = 256;  // keys per lazy-ratio block
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

enum : int32_t { kKindContiguous = 0, kKindPaged = 1, kKindRing = 2 };

// One sequence as the device sees it (no default member initializers: it lives in __shared__).
struct SeqDesc {
  const uint16_t* k;
  const uint16_t* v;
  float* lse;              // [num_queries × heads] or null
  int64_t first_row;
  int64_t row_stride;
  int64_t block_stride;
  int32_t kind;
  int32_t block_size;
  int32_t sink;
  int32_t window;
  int32_t num_queries;
  int32_t first_pos;
  int32_t table_offset;    // kPaged: its block table in the packed tables
  int32_t nsplit;          // key splits per query
  int32_t block_base;      // its first split block (= partial slot) in the split grid
  int32_t query_base;      // its first query in the merge grid
  int32_t vec;             // k, v and strides 16-byte aligned: vector loads
};

__host__ __device__ inline int32_t imin(int32_t a, int32_t b) { return a < b ? a : b; }
__host__ __device__ inline int32_t imax(int32_t a, int32_t b) { return a > b ? a : b; }

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
  if (d.kind == kKindPaged) {
    return static_cast<int64_t>(tables[d.table_offset + t / d.block_size]) * d.block_stride +
           static_cast<int64_t>(t % d.block_size) * d.row_stride;
  }
  if (d.kind == kKindRing && t >= d.sink) t = d.sink + (t - d.sink) % d.window;
  return static_cast<int64_t>(t) * d.row_stride;
}

// ---------------------------------------------------------------------------------------------
// Device helpers

__device__ __forceinline__ float half_bits_to_float(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
}

// N consecutive f16 values at p to f32; `vec`: p is aligned to 2·N bytes.
template <int N>
__device__ __forceinline__ void load_f16(const uint16_t* p, bool vec, float* f) {
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
  for (int e = 0; e < N; ++e) f[e] = half_bits_to_float(__ldg(reinterpret_cast<const unsigned short*>(p) + e));
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
// to f16 as the CPU's load_queries does.
template <int HD, int G>
__device__ __forceinline__ void load_query(const float* qrow, int kl, float (&qr)[G][16]) {
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const float* src = qrow + g * HD + Lanes<HD>::dim(c, kl);
#pragma unroll
      for (int e = 0; e < 8; ++e) qr[g][c * 8 + e] = __half2float(__float2half_rn(src[e]));
    }
  }
}

// This lane's 16 dimensions of the key row at kp (the KV head's first element).
template <int HD>
__device__ __forceinline__ void load_key(const uint16_t* kp, int kl, bool vec, float (&k)[16]) {
  load_f16<8>(kp + Lanes<HD>::dim(0, kl), vec, k);
  load_f16<8>(kp + Lanes<HD>::dim(1, kl), vec, k + 8);
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

// ---------------------------------------------------------------------------------------------
// Decode / generic path

// Block (x = split slot, y = KV head): keys [j0, j1) of one query for its G query heads. Per
// chunk of kChunk keys: scores into shared memory (key groups), the chunk max and exp (a warp per
// head), then the values weighted (lanes over dimensions, warps over keys); running max/sum/acc
// carried across chunks. Writes partial (m, l) and the unnormalized Σ exp(s − m)·v.
template <int HD, int G>
__global__ void __launch_bounds__(kThreads)
split_kernel(const float* __restrict__ q, const SeqDesc* __restrict__ descs,
             const int32_t* __restrict__ block_seq, const int32_t* __restrict__ tables,
             int64_t q_stride, int heads, float scale, int split, float* __restrict__ part_acc,
             float* __restrict__ part_ml) {
  using L = Lanes<HD>;
  constexpr int kDpl = HD / 32;  // value dimensions per lane
  constexpr int kPerHead = kChunk > kWarps * HD ? kChunk : kWarps * HD;
  constexpr int kUnroll1 = G <= 4 ? 2 : 1;  // keys per key group in flight while scoring
  constexpr int kUnroll3 = 8;               // value rows per warp in flight
  // Scores / probabilities [G][kChunk]; after the last chunk, the cross-warp sums [kWarps][G][HD].
  __shared__ float sh_s[G * kPerHead];
  __shared__ int64_t sh_off[kChunk];
  __shared__ float sh_mn[G], sh_cs[G];
  __shared__ SeqDesc sd;

  if (threadIdx.x == 0) sd = descs[block_seq[blockIdx.x]];
  __syncthreads();
  const int local = static_cast<int>(blockIdx.x) - sd.block_base;
  const int32_t i = local / sd.nsplit;
  const int32_t split_index = local % sd.nsplit;
  const KeySpan span = attended_span(sd, sd.first_pos + i);
  const int32_t j0 = split_index * split;
  if (j0 >= span.count) return;  // a split past this query's keys (earlier queries of a chunk)
  const int32_t j1 = imin(j0 + split, span.count);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kl = lane % L::kPerKey, ks = lane / L::kPerKey;
  const int kvh = blockIdx.y;
  const int64_t head_offset = static_cast<int64_t>(kvh) * HD;
  const bool vec = sd.vec != 0;

  float qr[G][16];
  load_query<HD, G>(q + (sd.first_row + i) * q_stride + head_offset * G, kl, qr);

  float m_run[G], l_run[G], acc[G][kDpl];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m_run[g] = kNegInf;
    l_run[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < kDpl; ++e) acc[g][e] = 0.0f;
  }

  for (int32_t c0 = j0; c0 < j1; c0 += kChunk) {
    const int n = imin(kChunk, j1 - c0);
    // Scores. `base` is warp-uniform, so every lane reaches the shuffles in key_dots.
    for (int base = warp * L::kKeysPerWarp; base < n; base += kUnroll1 * L::kKeysPerBlock) {
      float kf[kUnroll1][16];
      int64_t off[kUnroll1];
#pragma unroll
      for (int u = 0; u < kUnroll1; ++u) {
        const int j = base + u * L::kKeysPerBlock + ks;
        off[u] = 0;
        if (j < n) {
          off[u] = token_row(sd, tables, span_token(span, c0 + j));
          load_key<HD>(sd.k + off[u] + head_offset, kl, vec, kf[u]);
        } else {
#pragma unroll
          for (int e = 0; e < 16; ++e) kf[u][e] = 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll1; ++u) {
        float dot[G];
        key_dots<HD, G>(qr, kf[u], dot);
        const int j = base + u * L::kKeysPerBlock + ks;
        if (j < n) {
#pragma unroll
          for (int g = 0; g < G; ++g) {
            if (g % L::kPerKey == kl) sh_s[g * kChunk + j] = dot[g] * scale;
          }
          if (kl == 0) sh_off[j] = off[u];
        }
      }
    }
    __syncthreads();
    // Chunk max and probabilities relative to the new running max, a warp per head.
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g % kWarps != warp) continue;
      float* s = sh_s + g * kChunk;
      float cm = kNegInf;
      for (int j = lane; j < n; j += 32) cm = fmaxf(cm, s[j]);
      const float mn = fmaxf(m_run[g], warp_max(cm));  // finite: n ≥ 1
      float cs = 0.0f;
      for (int j = lane; j < n; j += 32) {
        const float e = expf(s[j] - mn);
        s[j] = e;
        cs += e;
      }
      cs = warp_sum(cs);
      if (lane == 0) {
        sh_mn[g] = mn;
        sh_cs[g] = cs;
      }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float mn = sh_mn[g];
      const float correction = expf(m_run[g] - mn);  // 0 on the first chunk (m_run = −inf)
      l_run[g] = l_run[g] * correction + sh_cs[g];
      m_run[g] = mn;
#pragma unroll
      for (int e = 0; e < kDpl; ++e) acc[g][e] *= correction;
    }
    // Values: lane owns dims lane·kDpl.., warp w takes keys w, w + kWarps, ...
    const uint16_t* vbase = sd.v + head_offset + lane * kDpl;
    for (int jb = warp; jb < n; jb += kWarps * kUnroll3) {
      float vf[kUnroll3][kDpl];
#pragma unroll
      for (int u = 0; u < kUnroll3; ++u) {
        const int j = jb + u * kWarps;
        if (j < n) {
          load_f16<kDpl>(vbase + sh_off[j], vec, vf[u]);
        } else {
#pragma unroll
          for (int e = 0; e < kDpl; ++e) vf[u][e] = 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll3; ++u) {
        const int j = jb + u * kWarps;
        if (j >= n) continue;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float p = sh_s[g * kChunk + j];
#pragma unroll
          for (int e = 0; e < kDpl; ++e) acc[g][e] = fmaf(p, vf[u][e], acc[g][e]);
        }
      }
    }
    __syncthreads();  // the next chunk (or the reduction below) overwrites sh_s and sh_off
  }

  float* red = sh_s;
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int e = 0; e < kDpl; ++e) red[(warp * G + g) * HD + lane * kDpl + e] = acc[g][e];
  }
  __syncthreads();
  const int64_t slot_head = static_cast<int64_t>(blockIdx.x) * heads + static_cast<int64_t>(kvh) * G;
  for (int x = threadIdx.x; x < G * HD; x += kThreads) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += red[w * G * HD + x];
    part_acc[slot_head * HD + x] = sum;  // x = g·HD + d: head slot_head + g, dim d
  }
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (threadIdx.x == g) {
      part_ml[(slot_head + g) * 2] = m_run[g];
      part_ml[(slot_head + g) * 2 + 1] = l_run[g];
    }
  }
}

// Block (x = a query of the decode-path sequences, y = a group of kWarps heads), a warp per head:
// out = Σ e^(m_s − M)·acc_s / L, L = Σ e^(m_s − M)·l_s, lse = M + log L over the query's splits.
// Lanes compute 32 splits' weights at once; the weighted sums then walk those splits with the
// weights shuffled out, so the partial loads of consecutive splits are in flight together.
template <int HD>
__global__ void __launch_bounds__(kThreads)
merge_kernel(const SeqDesc* __restrict__ descs, const int32_t* __restrict__ query_seq,
             const float* __restrict__ part_acc, const float* __restrict__ part_ml, int heads,
             int split, int64_t out_stride, float* __restrict__ out) {
  constexpr int kDpl = HD / 32;
  __shared__ SeqDesc sd;
  if (threadIdx.x == 0) sd = descs[query_seq[blockIdx.x]];
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = static_cast<int>(blockIdx.y) * kWarps + warp;
  if (h >= heads) return;  // warp-uniform; no block barrier follows
  const int32_t i = static_cast<int32_t>(blockIdx.x) - sd.query_base;
  const int32_t splits = (attended_span(sd, sd.first_pos + i).count + split - 1) / split;
  const int64_t slot0 = static_cast<int64_t>(sd.block_base) + static_cast<int64_t>(i) * sd.nsplit;

  float m = kNegInf;
  for (int s = lane; s < splits; s += 32) m = fmaxf(m, part_ml[((slot0 + s) * heads + h) * 2]);
  m = warp_max(m);  // finite: every query has a key in its first split
  float l = 0.0f, o[kDpl] = {};
  for (int s0 = 0; s0 < splits; s0 += 32) {
    float w = 0.0f;
    if (s0 + lane < splits) {
      const int64_t sh = (slot0 + s0 + lane) * heads + h;
      w = expf(part_ml[sh * 2] - m);
      l = fmaf(w, part_ml[sh * 2 + 1], l);
    }
    const int count = imin(32, splits - s0);  // warp-uniform: the shuffles see every lane
#pragma unroll 8
    for (int k = 0; k < count; ++k) {
      const float wk = __shfl_sync(kFullMask, w, k);
      const float* a = part_acc + ((slot0 + s0 + k) * heads + h) * HD + lane * kDpl;
#pragma unroll
      for (int e = 0; e < kDpl; ++e) o[e] = fmaf(wk, a[e], o[e]);
    }
  }
  l = warp_sum(l);
  const float inv = 1.0f / l;
  float* dst = out + (sd.first_row + i) * out_stride + static_cast<int64_t>(h) * HD + lane * kDpl;
#pragma unroll
  for (int e = 0; e < kDpl; ++e) dst[e] = o[e] * inv;
  if (lane == 0 && sd.lse != nullptr) sd.lse[static_cast<int64_t>(i) * heads + h] = m + logf(l);
}

// ---------------------------------------------------------------------------------------------
// Prefill path

// qh[h][i][d] = f16(q[row0 + i][h·hd + d]) for i < c: the head-major query chunk.
__global__ void prefill_queries(const float* __restrict__ q, int64_t q_stride, int64_t row0, int c,
                                int heads, int hd, __half* __restrict__ qh) {
  const int64_t total = static_cast<int64_t>(heads) * c * hd;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = idx % hd;
    const int64_t i = (idx / hd) % c;
    const int64_t h = idx / (static_cast<int64_t>(hd) * c);
    qh[idx] = __float2half_rn(q[(row0 + i) * q_stride + h * hd + d]);
  }
}

// Merges another (max, sum) pair into (m, l); −inf marks an empty one.
__device__ __forceinline__ void combine(float& m, float& l, float m2, float l2) {
  if (m2 == kNegInf) return;
  if (m == kNegInf) {
    m = m2;
    l = l2;
    return;
  }
  const float mx = fmaxf(m, m2);
  l = l * expf(m - mx) + l2 * expf(m2 - mx);
  m = mx;
}

// Block x = row (h, i) of the chunk's scores S[h][i][0..nk) (ld apart): query i at position
// p0 + i sees keys ≤ p0 + i. Writes P[h][i][t] = f16(exp(s − m) / l) there, 0 for the masked
// keys, and lse[(lse_q0 + i)·heads + h] = m + log l.
__global__ void __launch_bounds__(kSoftmaxThreads)
prefill_softmax(const float* __restrict__ scores, int64_t ld, int c, int32_t nk, int32_t p0,
                int heads, __half* __restrict__ probs, float* __restrict__ lse, int64_t lse_q0) {
  __shared__ float sh_m[kSoftmaxThreads / 32], sh_l[kSoftmaxThreads / 32];
  const int64_t row = blockIdx.x;
  const int h = static_cast<int>(row / c), i = static_cast<int>(row % c);
  const float* s = scores + row * ld;
  __half* p = probs + row * ld;
  const int32_t valid = p0 + i + 1;  // ≤ nk
  constexpr int kStep = kSoftmaxThreads * 4;

  float m = kNegInf, l = 0.0f;
  for (int32_t t = threadIdx.x * 4; t < valid; t += kStep) {
    // t < valid ≤ ld and ld is a multiple of 8: the float4 stays inside the row.
    const float4 v = *reinterpret_cast<const float4*>(s + t);
    const float x[4] = {v.x, v.y, v.z, v.w};
    float mx = x[0];
#pragma unroll
    for (int e = 1; e < 4; ++e) {
      if (t + e < valid) mx = fmaxf(mx, x[e]);
    }
    const float mn = fmaxf(m, mx);
    l *= expf(m - mn);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (t + e < valid) l += expf(x[e] - mn);
    }
    m = mn;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(kFullMask, m, o);
    const float l2 = __shfl_xor_sync(kFullMask, l, o);
    combine(m, l, m2, l2);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh_m[warp] = m;
    sh_l[warp] = l;
  }
  __syncthreads();
  m = sh_m[0];
  l = sh_l[0];
  for (int w = 1; w < kSoftmaxThreads / 32; ++w) combine(m, l, sh_m[w], sh_l[w]);
  const float inv = 1.0f / l;

  for (int32_t t = threadIdx.x * 4; t < nk; t += kStep) {
    __half out[4];
    if (t < valid) {
      const float4 v = *reinterpret_cast<const float4*>(s + t);
      const float x[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        out[e] = __float2half_rn(t + e < valid ? expf(x[e] - m) * inv : 0.0f);
      }
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) out[e] = __float2half_rn(0.0f);
    }
    // t + 4 ≤ round_up(nk, 4) ≤ ld: inside the row; 8-byte aligned (ld and t multiples of 4).
    uint2 packed;
    packed.x = static_cast<uint32_t>(__half_as_ushort(out[0])) |
               (static_cast<uint32_t>(__half_as_ushort(out[1])) << 16);
    packed.y = static_cast<uint32_t>(__half_as_ushort(out[2])) |
               (static_cast<uint32_t>(__half_as_ushort(out[3])) << 16);
    *reinterpret_cast<uint2*>(p + t) = packed;
  }
  if (threadIdx.x == 0 && lse != nullptr) lse[(lse_q0 + i) * heads + h] = m + logf(l);
}

// ---------------------------------------------------------------------------------------------
// Lazy ratio

// Block (x = query index from first_query, y = KV head, z = split of kRatioSplit keys): the mass
// Σ exp(s − lse) of its G heads over its keys of [0, sink_end) ∪ [window_begin, n), keys ≤ the
// query only. Writes one float per block.
template <int HD, int G>
__global__ void __launch_bounds__(kThreads)
ratio_kernel(const float* __restrict__ q, const float* __restrict__ lse, SeqDesc kv,
             const int32_t* __restrict__ tables, int64_t q_stride, int heads, float scale,
             int32_t first_query, int32_t sink_end, int32_t window_begin,
             float* __restrict__ parts) {
  using L = Lanes<HD>;
  __shared__ float sh_mass[kWarps];
  const int32_t pos = first_query + static_cast<int32_t>(blockIdx.x);
  const int kvh = blockIdx.y;
  const int32_t sink_keys = imin(sink_end, pos + 1);
  const KeySpan span{sink_keys, window_begin, sink_keys + imax(0, pos + 1 - window_begin)};
  const int32_t j0 = static_cast<int32_t>(blockIdx.z) * kRatioSplit;
  const int32_t j1 = imin(j0 + kRatioSplit, span.count);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kl = lane % L::kPerKey, ks = lane / L::kPerKey;
  const int64_t head_offset = static_cast<int64_t>(kvh) * HD;

  float mass = 0.0f;
  if (j0 < j1) {  // block-uniform
    float qr[G][16];
    load_query<HD, G>(q + static_cast<int64_t>(pos) * q_stride + head_offset * G, kl, qr);
    float row_lse[G];
#pragma unroll
    for (int g = 0; g < G; ++g) row_lse[g] = lse[static_cast<int64_t>(pos) * heads + kvh * G + g];
    const bool vec = kv.vec != 0;
    for (int32_t base = j0 + warp * L::kKeysPerWarp; base < j1; base += L::kKeysPerBlock) {
      const int32_t j = base + ks;
      float kf[16];
      if (j < j1) {
        load_key<HD>(kv.k + token_row(kv, tables, span_token(span, j)) + head_offset, kl, vec, kf);
      } else {
#pragma unroll
        for (int e = 0; e < 16; ++e) kf[e] = 0.0f;
      }
      float dot[G];
      key_dots<HD, G>(qr, kf, dot);
      if (j < j1 && kl == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) mass += expf(dot[g] * scale - row_lse[g]);
      }
    }
  }
  mass = warp_sum(mass);
  if (lane == 0) sh_mass[warp] = mass;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += sh_mass[w];
    parts[(static_cast<int64_t>(blockIdx.x) * gridDim.y + blockIdx.y) * gridDim.z + blockIdx.z] =
        total;
  }
}

// result = clamp(Σ parts / denominator, 0, 1), summed in double by one block.
__global__ void __launch_bounds__(256)
ratio_final(const float* __restrict__ parts, int64_t count, double denominator,
            float* __restrict__ result) {
  __shared__ double sh[256];
  double sum = 0.0;
  for (int64_t x = threadIdx.x; x < count; x += 256) sum += parts[x];
  sh[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = 128; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) sh[threadIdx.x] += sh[threadIdx.x + stride];
    __syncthreads();
  }
  // Rounding of the log-sum-exp can push a full mass a few ulp past 1.
  if (threadIdx.x == 0) *result = static_cast<float>(fmin(1.0, fmax(0.0, sh[0] / denominator)));
}

// ---------------------------------------------------------------------------------------------
// Host side

// Calls Launch<HD, G>::run(args...) for the runtime head_dim and group (checked beforehand).
template <int HD, template <int, int> class Launch, typename... Args>
void dispatch_group(int group, Args&&... args) {
  switch (group) {
    case 1: Launch<HD, 1>::run(args...); break;
    case 2: Launch<HD, 2>::run(args...); break;
    case 3: Launch<HD, 3>::run(args...); break;
    case 4: Launch<HD, 4>::run(args...); break;
    case 5: Launch<HD, 5>::run(args...); break;
    case 6: Launch<HD, 6>::run(args...); break;
    case 7: Launch<HD, 7>::run(args...); break;
    case 8: Launch<HD, 8>::run(args...); break;
    default: throw std::logic_error("CudaAttention: unchecked group");
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

struct SplitArgs {
  dim3 grid;
  cudaStream_t stream;
  const float* q;
  const SeqDesc* descs;
  const int32_t* block_seq;
  const int32_t* tables;
  int64_t q_stride;
  int heads;
  float scale;
  int split;
  float* part_acc;
  float* part_ml;
};

template <int HD, int G>
struct SplitLaunch {
  static void run(const SplitArgs& a) {
    split_kernel<HD, G><<<a.grid, kThreads, 0, a.stream>>>(a.q, a.descs, a.block_seq, a.tables,
                                                           a.q_stride, a.heads, a.scale, a.split,
                                                           a.part_acc, a.part_ml);
  }
};

struct RatioArgs {
  dim3 grid;
  cudaStream_t stream;
  const float* q;
  const float* lse;
  SeqDesc kv;
  const int32_t* tables;
  int64_t q_stride;
  int heads;
  float scale;
  int32_t first_query, sink_end, window_begin;
  float* parts;
};

template <int HD, int G>
struct RatioLaunch {
  static void run(const RatioArgs& a) {
    ratio_kernel<HD, G><<<a.grid, kThreads, 0, a.stream>>>(a.q, a.lse, a.kv, a.tables, a.q_stride,
                                                           a.heads, a.scale, a.first_query,
                                                           a.sink_end, a.window_begin, a.parts);
  }
};

int check_shape(const AttentionShape& s, const char* op) {
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

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The device descriptor of a view (first_row, queries, splits filled in by the caller); checks
// what the kernels rely on.
SeqDesc describe(const KvView& kv, const char* op) {
  const std::string where = std::string("CUDA ") + op + ": ";
  SeqDesc d{};
  d.k = kv.k;
  d.v = kv.v;
  d.row_stride = kv.row_stride;
  switch (kv.kind) {
    case KvView::Kind::kContiguous: d.kind = kKindContiguous; break;
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
      break;
  }
  d.vec = aligned16(kv.k) && aligned16(kv.v) && kv.row_stride % 8 == 0 &&
          (d.kind != kKindPaged || kv.block_stride % 8 == 0);
  return d;
}

bool takes_prefill_path(const AttentionSeq& seq) {
  return seq.kv.kind == KvView::Kind::kContiguous && seq.num_queries >= kPrefillMinQueries;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The decode-path work of one attention call: descriptors, the sequence of each split block and
// of each query, the packed block tables, and the key split.
struct GenericPlan {
  std::vector<SeqDesc> descs;
  std::vector<int32_t> block_seq, query_seq, tables;
  std::vector<int32_t> max_keys;  // per desc: keys of its last query
  int32_t split = 0;
};

// Split size: the largest power of two ≥ kMinSplit whose grid still has ≥ 4 blocks per SM (so a
// few long decodes fill the GPU); small splits cost only partials and merge work.
int32_t choose_split(const GenericPlan& plan, int kv_heads, int num_sms) {
  int32_t longest = 1;
  for (int32_t k : plan.max_keys) longest = std::max(longest, k);
  auto blocks = [&](int64_t split) {
    int64_t total = 0;
    for (size_t s = 0; s < plan.descs.size(); ++s) {
      total += plan.descs[s].num_queries * ((plan.max_keys[s] + split - 1) / split);
    }
    return total * kv_heads;
  };
  const int64_t target = 4 * static_cast<int64_t>(std::max(num_sms, 1));
  int64_t split = kMinSplit;
  while (split < longest && blocks(split * 2) >= target) split *= 2;
  return static_cast<int32_t>(split);
}

// Fills `plan` with the sequences of `seqs` that take the decode path.
void plan_generic(std::span<const AttentionSeq> seqs, const AttentionShape& shape, int num_sms,
                  GenericPlan& plan) {
  plan.descs.clear();
  plan.block_seq.clear();
  plan.query_seq.clear();
  plan.tables.clear();
  plan.max_keys.clear();
  for (const AttentionSeq& seq : seqs) {
    if (seq.num_queries <= 0 || takes_prefill_path(seq)) continue;
    SeqDesc d = describe(seq.kv, "attention");
    if (d.kind == kKindRing && seq.num_queries > 1 &&
        seq.first_pos + seq.num_queries > d.sink + d.window) {
      throw std::invalid_argument(
          "CUDA attention: several queries on a ring whose window has wrapped");
    }
    d.lse = seq.lse;
    d.first_row = seq.first_row;
    d.num_queries = seq.num_queries;
    d.first_pos = seq.first_pos;
    const int32_t last = seq.first_pos + seq.num_queries - 1;
    if (d.kind == kKindPaged) {
      d.table_offset = static_cast<int32_t>(plan.tables.size());
      plan.tables.insert(plan.tables.end(), seq.kv.block_table,
                         seq.kv.block_table + last / d.block_size + 1);
    }
    plan.max_keys.push_back(attended_span(d, last).count);  // grows with the position
    plan.descs.push_back(d);
  }
  if (plan.descs.empty()) return;
  plan.split = choose_split(plan, shape.kv_heads, num_sms);
  int64_t blocks = 0, queries = 0;
  for (size_t s = 0; s < plan.descs.size(); ++s) {
    SeqDesc& d = plan.descs[s];
    d.nsplit = (plan.max_keys[s] + plan.split - 1) / plan.split;
    d.block_base = static_cast<int32_t>(blocks);
    d.query_base = static_cast<int32_t>(queries);
    blocks += static_cast<int64_t>(d.num_queries) * d.nsplit;
    queries += d.num_queries;
    if (blocks > std::numeric_limits<int32_t>::max()) {
      throw std::invalid_argument("CUDA attention: too many queries × keys in one call");
    }
    plan.block_seq.insert(plan.block_seq.end(), static_cast<size_t>(d.num_queries) * d.nsplit,
                          static_cast<int32_t>(s));
    plan.query_seq.insert(plan.query_seq.end(), static_cast<size_t>(d.num_queries),
                          static_cast<int32_t>(s));
  }
}

// Byte offsets of the sections of the staged buffer (each 16-byte aligned).
struct StagingLayout {
  size_t descs = 0, block_seq = 0, query_seq = 0, tables = 0, total = 0;
};

StagingLayout staging_layout(const GenericPlan& plan) {
  auto align = [](size_t x) { return (x + 15) / 16 * 16; };
  StagingLayout l;
  l.descs = 0;
  l.block_seq = align(l.descs + plan.descs.size() * sizeof(SeqDesc));
  l.query_seq = align(l.block_seq + plan.block_seq.size() * sizeof(int32_t));
  l.tables = align(l.query_seq + plan.query_seq.size() * sizeof(int32_t));
  l.total = align(l.tables + plan.tables.size() * sizeof(int32_t));
  return l;
}

// A column-major cuBLAS strided-batched GEMM: C = alpha · op(A) · op(B) (beta 0), element
// offsets of the first batch's A, B, C from their base pointers.
struct GemmArgs {
  cublasOperation_t trans_a, trans_b;
  int m, n, k;
  int lda, ldb, ldc;
  int64_t offset_a, offset_b, offset_c;
  long long stride_a, stride_b, stride_c;
  int batch;
};

// Scores of a chunk of c queries against keys [0, nk), one batch per KV head g. Row-major
// S[h][i][t] (ld apart) seen column-major is the nk × (group·c) matrix S_g (ldc = ld) of the
// `group` heads of g, stacked: S_g = K_g · Q_gᵀ, where
//  - K_g: row-major keys K[t][g·hd + d] (row_stride apart) are the column-major hd × nk matrix
//    with lda = row_stride at K + g·hd; op T makes it nk × hd.
//  - Q_g: the head-major chunk qh[h][i][d] for h = g·group .. g·group + group − 1 is the
//    column-major hd × (group·c) matrix with ldb = hd at qh + g·group·c·hd; op N.
GemmArgs score_gemm(int hd, int group, int kv_heads, int c, int32_t nk, int64_t row_stride,
                    int64_t ld) {
  GemmArgs a;
  a.trans_a = CUBLAS_OP_T;
  a.trans_b = CUBLAS_OP_N;
  a.m = nk;
  a.n = group * c;
  a.k = hd;
  a.lda = static_cast<int>(row_stride);
  a.ldb = hd;
  a.ldc = static_cast<int>(ld);
  a.offset_a = 0;
  a.offset_b = 0;
  a.offset_c = 0;
  a.stride_a = hd;
  a.stride_b = static_cast<long long>(group) * c * hd;
  a.stride_c = static_cast<long long>(group) * c * ld;
  a.batch = kv_heads;
  return a;
}

// Outputs of head h = g·group + j for every KV head g (one batch each): O_h = P_h · V_g written
// to out rows (out_stride apart) at column h·hd. Column-major: O_hᵀ (hd × c, ldc = out_stride)
// = V_gᵀ · P_hᵀ, where
//  - V_gᵀ: row-major values V[t][g·hd + d] are the column-major hd × nk matrix with
//    lda = row_stride at V + g·hd; op N.
//  - P_hᵀ: row-major P[h][i][t] (ld apart) is the column-major nk × c matrix with ldb = ld at
//    P + h·c·ld; op N.
GemmArgs value_gemm(int hd, int group, int kv_heads, int c, int32_t nk, int64_t row_stride,
                    int64_t ld, int64_t out_stride, int j) {
  GemmArgs a;
  a.trans_a = CUBLAS_OP_N;
  a.trans_b = CUBLAS_OP_N;
  a.m = hd;
  a.n = c;
  a.k = nk;
  a.lda = static_cast<int>(row_stride);
  a.ldb = static_cast<int>(ld);
  a.ldc = static_cast<int>(out_stride);
  a.offset_a = 0;
  a.offset_b = static_cast<int64_t>(j) * c * ld;
  a.offset_c = static_cast<int64_t>(j) * hd;
  a.stride_a = hd;
  a.stride_b = static_cast<long long>(group) * c * ld;
  a.stride_c = static_cast<long long>(group) * hd;
  a.batch = kv_heads;
  return a;
}

// Query rows per prefill chunk: S and P of a chunk stay within kScoreBudget, in equal chunks
// rounded up to 64 rows.
int prefill_chunk(int heads, int32_t num_queries, int32_t first_pos) {
  const int64_t ld = round_up(static_cast<int64_t>(first_pos) + num_queries, 8);
  const int64_t per_query = static_cast<int64_t>(heads) * ld * (sizeof(float) + sizeof(__half));
  const int64_t most = std::max<int64_t>(64, kScoreBudget / per_query / 64 * 64);
  const int64_t chunks = (num_queries + most - 1) / most;
  return static_cast<int>(std::min<int64_t>(num_queries, round_up((num_queries + chunks - 1) / chunks, 64)));
}

}  // namespace

struct CudaAttention::Impl {
  explicit Impl(CudaContext& c) : ctx(c) {}

  CudaContext& ctx;
  GenericPlan plan;              // reused: no host allocation per decode step after warm-up
  std::vector<uint8_t> host;     // the packed staging bytes
  DeviceScratch staged;          // their device copy
  DeviceScratch part_acc, part_ml;
  DeviceScratch prefill_q, prefill_s, prefill_p;
  DeviceScratch ratio_parts;
  float ratio_result = 0.0f;

  int num_sms() const { return ctx.num_sms > 0 ? ctx.num_sms : 132; }

  void generic(const float* q, const AttentionShape& shape, int group, float* out);
  void prefill(const float* q, const AttentionSeq& seq, const AttentionShape& shape, int group,
               float* out);
};

void CudaAttention::Impl::generic(const float* q, const AttentionShape& shape, int group,
                                  float* out) {
  const StagingLayout layout = staging_layout(plan);
  host.assign(layout.total, 0);
  auto put = [&](size_t offset, const auto& v) {
    if (!v.empty()) std::memcpy(host.data() + offset, v.data(), v.size() * sizeof(v[0]));
  };
  put(layout.descs, plan.descs);
  put(layout.block_seq, plan.block_seq);
  put(layout.query_seq, plan.query_seq);
  put(layout.tables, plan.tables);
  uint8_t* device = staged.get<uint8_t>(static_cast<int64_t>(layout.total));
  ctx.upload_small(device, host.data(), static_cast<int64_t>(layout.total));

  const auto* descs = reinterpret_cast<const SeqDesc*>(device + layout.descs);
  const auto* block_seq = reinterpret_cast<const int32_t*>(device + layout.block_seq);
  const auto* query_seq = reinterpret_cast<const int32_t*>(device + layout.query_seq);
  const auto* tables = reinterpret_cast<const int32_t*>(device + layout.tables);
  const int64_t blocks = static_cast<int64_t>(plan.block_seq.size());
  const int64_t slots = blocks * shape.heads;
  float* acc = part_acc.get<float>(slots * shape.head_dim);
  float* ml = part_ml.get<float>(slots * 2);

  SplitArgs a{dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(shape.kv_heads)),
              ctx.stream, q, descs, block_seq, tables, shape.q_stride, shape.heads, shape.scale,
              plan.split, acc, ml};
  dispatch<SplitLaunch>(shape.head_dim, group, a);
  LS_CUDA_LAUNCHED();
  const dim3 merge_grid(static_cast<unsigned>(plan.query_seq.size()),
                        static_cast<unsigned>((shape.heads + kWarps - 1) / kWarps));
  if (shape.head_dim == 64) {
    merge_kernel<64><<<merge_grid, kThreads, 0, ctx.stream>>>(
        descs, query_seq, acc, ml, shape.heads, plan.split, shape.out_stride, out);
  } else {
    merge_kernel<128><<<merge_grid, kThreads, 0, ctx.stream>>>(
        descs, query_seq, acc, ml, shape.heads, plan.split, shape.out_stride, out);
  }
  LS_CUDA_LAUNCHED();
}

void CudaAttention::Impl::prefill(const float* q, const AttentionSeq& seq,
                                  const AttentionShape& shape, int group, float* out) {
  const int heads = shape.heads, hd = shape.head_dim;
  const int32_t nq = seq.num_queries, first_pos = seq.first_pos;
  const int chunk = prefill_chunk(heads, nq, first_pos);
  const int64_t ld_most = round_up(static_cast<int64_t>(first_pos) + nq, 8);
  auto* qh = prefill_q.get<__half>(static_cast<int64_t>(heads) * chunk * hd);
  float* scores = prefill_s.get<float>(static_cast<int64_t>(heads) * chunk * ld_most);
  auto* probs = prefill_p.get<__half>(static_cast<int64_t>(heads) * chunk * ld_most);
  const auto* keys = reinterpret_cast<const __half*>(seq.kv.k);
  const auto* values = reinterpret_cast<const __half*>(seq.kv.v);
  const float one = 1.0f, zero = 0.0f;

  for (int32_t q0 = 0; q0 < nq; q0 += chunk) {
    const int c = std::min<int32_t>(chunk, nq - q0);
    const int32_t nk = first_pos + q0 + c;  // keys of the chunk's last query
    const int64_t ld = round_up(nk, 8);
    const int64_t elements = static_cast<int64_t>(heads) * c * hd;
    const auto convert_blocks =
        static_cast<unsigned>(std::min<int64_t>((elements + 255) / 256, int64_t{num_sms()} * 16));
    prefill_queries<<<convert_blocks, 256, 0, ctx.stream>>>(q, shape.q_stride, seq.first_row + q0,
                                                            c, heads, hd, qh);
    LS_CUDA_LAUNCHED();

    const GemmArgs s = score_gemm(hd, group, shape.kv_heads, c, nk, seq.kv.row_stride, ld);
    LS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        ctx.cublas, s.trans_a, s.trans_b, s.m, s.n, s.k, &shape.scale, keys + s.offset_a,
        CUDA_R_16F, s.lda, s.stride_a, qh + s.offset_b, CUDA_R_16F, s.ldb, s.stride_b, &zero,
        scores + s.offset_c, CUDA_R_32F, s.ldc, s.stride_c, s.batch, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));

    prefill_softmax<<<static_cast<unsigned>(static_cast<int64_t>(heads) * c), kSoftmaxThreads, 0,
                      ctx.stream>>>(scores, ld, c, nk, first_pos + q0, heads, probs, seq.lse, q0);
    LS_CUDA_LAUNCHED();

    float* out_rows = out + (seq.first_row + q0) * shape.out_stride;
    for (int j = 0; j < group; ++j) {
      const GemmArgs v =
          value_gemm(hd, group, shape.kv_heads, c, nk, seq.kv.row_stride, ld, shape.out_stride, j);
      LS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          ctx.cublas, v.trans_a, v.trans_b, v.m, v.n, v.k, &one, values + v.offset_a, CUDA_R_16F,
          v.lda, v.stride_a, probs + v.offset_b, CUDA_R_16F, v.ldb, v.stride_b, &zero,
          out_rows + v.offset_c, CUDA_R_32F, v.ldc, v.stride_c, v.batch, CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT));
    }
  }
}

CudaAttention::CudaAttention(CudaContext& ctx) : impl_(std::make_unique<Impl>(ctx)) {}

CudaAttention::~CudaAttention() = default;

void CudaAttention::attention(const float* q, std::span<const AttentionSeq> seqs,
                              const AttentionShape& shape, float* out) {
  const int group = check_shape(shape, "attention");
  Impl& m = *impl_;
  plan_generic(seqs, shape, m.num_sms(), m.plan);  // validates every view before any work
  if (!m.plan.descs.empty()) m.generic(q, shape, group, out);
  for (const AttentionSeq& seq : seqs) {
    if (takes_prefill_path(seq)) m.prefill(q, seq, shape, group, out);
  }
}

float CudaAttention::lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n,
                                int32_t w_last, int32_t sink, int32_t window,
                                const AttentionShape& shape) {
  const int group = check_shape(shape, "lazy_ratio");
  const int32_t first_query = std::max(0, n - std::max(w_last, 0));
  const int32_t num_q = n - first_query;
  if (num_q <= 0) return 1.0f;
  Impl& m = *impl_;
  SeqDesc d = describe(kv, "lazy_ratio");
  // The kept keys [0, sink_end) ∪ [window_begin, n), as ops_impl.inc's lazy_ratio clamps them.
  const int32_t sink_end = std::min(std::max(sink, 0), n);
  const int32_t window_begin = std::max(sink_end, n - std::max(window, 0));
  const int32_t most_keys = sink_end + (n - window_begin);  // those of the last query
  const int32_t splits = std::max(1, (most_keys + kRatioSplit - 1) / kRatioSplit);

  const int32_t* tables = nullptr;
  if (d.kind == kKindPaged) {
    const int64_t entries = (n - 1) / d.block_size + 1;
    int32_t* device = m.staged.get<int32_t>(entries);
    m.ctx.upload_small(device, kv.block_table, entries * static_cast<int64_t>(sizeof(int32_t)));
    tables = device;
  }
  const int64_t count = static_cast<int64_t>(num_q) * shape.kv_heads * splits;
  float* parts = m.ratio_parts.get<float>(count + 1);
  float* result = parts + count;
  RatioArgs a{dim3(static_cast<unsigned>(num_q), static_cast<unsigned>(shape.kv_heads),
                   static_cast<unsigned>(splits)),
              m.ctx.stream, q, lse, d, tables, shape.q_stride, shape.heads, shape.scale,
              first_query, sink_end, window_begin, parts};
  dispatch<RatioLaunch>(shape.head_dim, group, a);
  LS_CUDA_LAUNCHED();
  ratio_final<<<1, 256, 0, m.ctx.stream>>>(parts, count,
                                           static_cast<double>(num_q) * shape.heads, result);
  LS_CUDA_LAUNCHED();
  LS_CUDA_CHECK(cudaMemcpyAsync(&m.ratio_result, result, sizeof(float), cudaMemcpyDeviceToHost,
                                m.ctx.stream));
  LS_CUDA_CHECK(cudaStreamSynchronize(m.ctx.stream));
  return m.ratio_result;
}

}  // namespace lightserve::kernels::cuda
