// CudaAttention: Backend::attention and Backend::lazy_ratio on the device, with the semantics of
// the CPU oracle (kernels/cpu/attention_impl.inc): queries rounded to f16, scores
// scale · Σ q·k accumulated in f32, lse = the natural log-sum-exp of the scaled scores, GQA
// (query head h reads KV head h / (heads / kv_heads)), causal and streaming (ring) masks.
//
// Two paths, chosen per sequence:
//  - Prefill (kContiguous keys, 16-byte aligned rows, at least kPrefillMinQueries queries): one
//    fused causal flash-attention kernel on tensor cores (mma.sync, f16 × f16 → f32), no score
//    matrix in memory; see "Prefill path" below. Its probabilities are always rounded to f16 for
//    the P·V product, whether or not round_probabilities_f16 is set: the unnormalized
//    exp(s − m) ≤ 1 relative to the running row max m (relative error ≤ 2⁻¹¹ each, as llama.cpp's
//    rounding of the normalized ones), normalized afterwards by the f32 sum; lse comes from the
//    f32 max and sum.
//  - Everything else (decode, short chunks, paged and ring views): split-K flash decoding. A block
//    scores one key split of one query for the `group` query heads of one KV head (online softmax
//    in f32) and writes a partial (max, sum, unnormalized output); a merge kernel combines the
//    splits. Probabilities stay f32 here, and round_probabilities_f16 is not honoured (rounding the
//    normalized probabilities needs the global max and sum before any value is weighted, i.e. a
//    second pass over the keys); the difference is within the tests' tolerances.
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
// Prefill path: fused causal flash attention (FlashAttention-2 style) on tensor cores
//
// A block of kFlashWarps warps owns kFlashRows "rows" of one KV head g: row r of the sequence's
// num_queries · group rows is query r / group of query head g·group + r % group, so the `group`
// heads that share g read each key and value tile once. Warp w owns rows [16w, 16w + 16) of the
// block as one m16 tile of mma.sync.m16n8k16 (f16 × f16 → f32); its queries sit in registers as
// A fragments (converted to f16 on load). The block walks 64-key tiles 0 .. its last row's
// position, staged in shared memory by cp.async (two stages: the next tile loads while this one
// is used). Per tile a warp computes S = Q·Kᵀ (B fragments from K rows by ldmatrix), applies the
// causal mask (only on tiles reaching past its first row's position), updates the running max m
// and sum l of each row (f32, in the log2 domain: x = scale·log2(e)·q·k), rescales its output
// accumulator, and adds P·V with P = exp2(x − m) rounded to f16 straight from the S registers
// (the accumulator layout of S is the A layout of P) and V fragments by ldmatrix.trans. A warp
// skips tiles whose first key is past all of its rows. Keys past the block's last position are
// zero-filled, never read: every masked probability is exactly 0 and multiplies a finite value.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .f16/.f32; lane = 4·gid + tig):
//   A (16×16): reg 0 = row gid, cols 2tig, 2tig+1; reg 1 = row gid + 8, same cols;
//              reg 2 = row gid, cols 2tig + 8, +9;  reg 3 = row gid + 8, cols 2tig + 8, +9.
//   B (16×8):  reg 0 = rows (k) 2tig, 2tig+1 of col (n) gid; reg 1 = rows 2tig + 8, +9.
//   C (16×8):  c0, c1 = row gid, cols 2tig, 2tig+1; c2, c3 = row gid + 8, same cols.
//   ldmatrix.x4: lanes 8i..8i+7 address the 8 rows of matrix i; register i of lane l holds
//   matrix i's row l/4, elements 2(l%4), +1 (.trans: rows 2(l%4), +1 of column l/4).

constexpr int kFlashWarps = 8;
constexpr int kFlashThreads = kFlashWarps * 32;
constexpr int kFlashRows = kFlashWarps * 16;  // (query, head) rows per block
constexpr int kFlashKeys = 64;                // keys per shared-memory tile
constexpr int kFlashStages = 2;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int HD>
struct FlashTile {
  static_assert(HD == 64 || HD == 128);
  // f16 elements between shared-memory rows: 16-byte aligned rows (cp.async, ldmatrix) whose
  // 8-row ldmatrix reads hit 8 distinct 4-bank groups (HD + 8 halves = 4 words mod 32 apart).
  static constexpr int kPitch = HD + 8;
  static constexpr int kTile = kFlashKeys * kPitch;  // elements of one K or V tile
  static constexpr int kSmemBytes = kFlashStages * 2 * kTile * 2;
  static constexpr int kChunksPerRow = HD / 8;       // 16-byte pieces of a key row
  static constexpr int kLoadsPerThread = kFlashKeys * kChunksPerRow / kFlashThreads;
  static_assert(kLoadsPerThread * kFlashThreads == kFlashKeys * kChunksPerRow);
};

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global → shared, asynchronously; zero-fills instead when !valid (src not read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d += a · b (m16n8k16, f16 inputs, f32 accumulators).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 values as an f16 pair, `lo` in the low half (the lower column of a fragment).
__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
  return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(lo))) |
         (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(hi))) << 16);
}

struct FlashArgs {
  const float* q;
  int64_t q_stride;
  int64_t first_row;
  const uint16_t* k;
  const uint16_t* v;
  int64_t row_stride;
  int32_t num_queries;
  int32_t first_pos;
  int heads;
  int group;
  int kv_heads;
  int row_tiles;
  float scale_log2;  // shape.scale · log2(e)
  int64_t out_stride;
  float* out;
  float* lse;        // [num_queries × heads] or null
};

// Block b: KV head b % kv_heads, row tile row_tiles − 1 − b / kv_heads (the longest tiles, the
// last queries, start first).
template <int HD>
__global__ void __launch_bounds__(kFlashThreads, HD == 64 ? 2 : 1)
flash_prefill_kernel(const FlashArgs a) {
  using T = FlashTile<HD>;
  constexpr int kDimChunks = HD / 16;          // k-steps of Q·Kᵀ; pairs of output n-tiles
  constexpr int kKeyTiles = kFlashKeys / 8;    // n-tiles of S
  constexpr int kKeyChunks = kFlashKeys / 16;  // k-steps of P·V
  extern __shared__ __align__(16) uint16_t flash_smem[];  // [stage][K, V][kFlashKeys][kPitch]

  const int block = static_cast<int>(blockIdx.x);
  const int kvh = block % a.kv_heads;
  const int tile = a.row_tiles - 1 - block / a.kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gid = lane >> 2, tig = lane & 3;
  const int32_t total_rows = a.num_queries * a.group;  // < 2³¹ − kFlashRows (checked)
  // The query of row r; rows past the last (in the last tile) act as the last query, unstored.
  auto query_of = [&](int32_t r) { return imin(r / a.group, a.num_queries - 1); };
  const int32_t block_row0 = tile * kFlashRows;
  const int32_t warp_row0 = block_row0 + warp * 16;
  const int32_t num_keys = a.first_pos + query_of(block_row0 + kFlashRows - 1) + 1;
  const int num_tiles = (num_keys + kFlashKeys - 1) / kFlashKeys;
  const int32_t warp_first_pos = a.first_pos + query_of(warp_row0);
  const int32_t warp_last_pos = a.first_pos + query_of(warp_row0 + 15);
  const int32_t row_lo = warp_row0 + gid, row_hi = row_lo + 8;
  const int32_t query_lo = query_of(row_lo), query_hi = query_of(row_hi);
  const int32_t pos_lo = a.first_pos + query_lo, pos_hi = a.first_pos + query_hi;
  const int head_lo = kvh * a.group + row_lo % a.group;
  const int head_hi = kvh * a.group + row_hi % a.group;

  // This lane's A fragments of its two rows, f16-rounded as the CPU rounds queries.
  uint32_t qf[kDimChunks][4];
  {
    const float* q_lo =
        a.q + (a.first_row + query_lo) * a.q_stride + static_cast<int64_t>(head_lo) * HD;
    const float* q_hi =
        a.q + (a.first_row + query_hi) * a.q_stride + static_cast<int64_t>(head_hi) * HD;
#pragma unroll
    for (int kc = 0; kc < kDimChunks; ++kc) {
      const int c = kc * 16 + 2 * tig;
      qf[kc][0] = pack_f16x2(q_lo[c], q_lo[c + 1]);
      qf[kc][1] = pack_f16x2(q_hi[c], q_hi[c + 1]);
      qf[kc][2] = pack_f16x2(q_lo[c + 8], q_lo[c + 9]);
      qf[kc][3] = pack_f16x2(q_hi[c + 8], q_hi[c + 9]);
    }
  }

  const uint16_t* k_head = a.k + static_cast<int64_t>(kvh) * HD;
  const uint16_t* v_head = a.v + static_cast<int64_t>(kvh) * HD;
  // Issues the copies of key tile t into stage s; rows of keys ≥ num_keys are zero-filled.
  auto load_tile = [&](int t, int s) {
    uint16_t* ks = flash_smem + s * 2 * T::kTile;
    uint16_t* vs = ks + T::kTile;
#pragma unroll
    for (int i = 0; i < T::kLoadsPerThread; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kFlashThreads;
      const int r = c / T::kChunksPerRow, piece = c % T::kChunksPerRow;
      const int32_t key = t * kFlashKeys + r;
      const bool valid = key < num_keys;
      const int64_t offset = static_cast<int64_t>(valid ? key : 0) * a.row_stride + piece * 8;
      const int smem = r * T::kPitch + piece * 8;
      cp_async_16(shared_address(ks + smem), k_head + offset, valid);
      cp_async_16(shared_address(vs + smem), v_head + offset, valid);
    }
  };

  float o[2 * kDimChunks][4];
#pragma unroll
  for (int n = 0; n < 2 * kDimChunks; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
  }
  float m_lo = kNegInf, m_hi = kNegInf;  // running maxima (log2 domain)
  float l_lo = 0.0f, l_hi = 0.0f;        // this lane's part of the running sums

  // ldmatrix row addresses of this lane within a tile (see the layouts above):
  //  K (non-trans, B of S = Q·Kᵀ): matrices (keys +0, dims +0), (+0, +8), (+8, +0), (+8, +8).
  //  V (trans, B of O = P·V):      matrices (keys +0, dims +0), (+8, +0), (+0, +8), (+8, +8).
  const int k_lane = ((lane & 7) + (lane >> 4) * 8) * T::kPitch + ((lane >> 3) & 1) * 8;
  const int v_lane = ((lane & 7) + ((lane >> 3) & 1) * 8) * T::kPitch + (lane >> 4) * 8;

  load_tile(0, 0);
  cp_async_commit();
  for (int t = 0; t < num_tiles; ++t) {
    if (t + 1 < num_tiles) {
      load_tile(t + 1, (t + 1) & 1);  // the stage tile t − 1 used, released by the barrier below
      cp_async_commit();
      cp_async_wait<1>();             // tile t has landed (this thread's copies)
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();                  // ... and every thread's
    const int32_t k0 = t * kFlashKeys;
    if (k0 <= warp_last_pos) {  // warp-uniform: some row of this warp attends a key of the tile
      const uint32_t ks = shared_address(flash_smem + (t & 1) * 2 * T::kTile);
      const uint32_t vs = ks + T::kTile * 2;

      float s[kKeyTiles][4];
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
      }
#pragma unroll
      for (int kc = 0; kc < kDimChunks; ++kc) {
#pragma unroll
        for (int kp = 0; kp < kKeyTiles / 2; ++kp) {
          uint32_t b[4];
          ldmatrix_x4(b, ks + 2 * (k_lane + kp * 16 * T::kPitch + kc * 16));
          mma_16816(s[2 * kp], qf[kc], b[0], b[1]);
          mma_16816(s[2 * kp + 1], qf[kc], b[2], b[3]);
        }
      }

      // Scale into the log2 domain; mask keys past a row's position (tiles reaching past the
      // warp's first position only). Key of s[j][e]: k0 + 8j + 2tig + (e & 1).
      const bool mask = k0 + kFlashKeys - 1 > warp_first_pos;
      float tmax_lo = kNegInf, tmax_hi = kNegInf;
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[j][e] * a.scale_log2;
          if (mask && k0 + 8 * j + 2 * tig + (e & 1) > (e < 2 ? pos_lo : pos_hi)) x = kNegInf;
          s[j][e] = x;
        }
        tmax_lo = fmaxf(tmax_lo, fmaxf(s[j][0], s[j][1]));
        tmax_hi = fmaxf(tmax_hi, fmaxf(s[j][2], s[j][3]));
      }
      // The 4 lanes of a row (same gid) hold its 64 scores.
#pragma unroll
      for (int x = 1; x < 4; x <<= 1) {
        tmax_lo = fmaxf(tmax_lo, __shfl_xor_sync(kFullMask, tmax_lo, x));
        tmax_hi = fmaxf(tmax_hi, __shfl_xor_sync(kFullMask, tmax_hi, x));
      }
      // Finite: tile 0 holds key 0 ≤ every position, and every warp scores tile 0.
      const float mn_lo = fmaxf(m_lo, tmax_lo), mn_hi = fmaxf(m_hi, tmax_hi);
      const float corr_lo = exp2f(m_lo - mn_lo), corr_hi = exp2f(m_hi - mn_hi);  // 0 at first
      m_lo = mn_lo;
      m_hi = mn_hi;
      float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j) {
        s[j][0] = exp2f(s[j][0] - mn_lo);  // masked: exp2(−inf) = 0
        s[j][1] = exp2f(s[j][1] - mn_lo);
        s[j][2] = exp2f(s[j][2] - mn_hi);
        s[j][3] = exp2f(s[j][3] - mn_hi);
        sum_lo += s[j][0] + s[j][1];
        sum_hi += s[j][2] + s[j][3];
      }
      l_lo = l_lo * corr_lo + sum_lo;
      l_hi = l_hi * corr_hi + sum_hi;
#pragma unroll
      for (int n = 0; n < 2 * kDimChunks; ++n) {
        o[n][0] *= corr_lo;
        o[n][1] *= corr_lo;
        o[n][2] *= corr_hi;
        o[n][3] *= corr_hi;
      }

      // O += P·V: the A fragment of keys 16kc..16kc+15 is S's n-tiles 2kc and 2kc + 1.
#pragma unroll
      for (int kc = 0; kc < kKeyChunks; ++kc) {
        const uint32_t p[4] = {pack_f16x2(s[2 * kc][0], s[2 * kc][1]),
                               pack_f16x2(s[2 * kc][2], s[2 * kc][3]),
                               pack_f16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                               pack_f16x2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
        for (int dp = 0; dp < kDimChunks; ++dp) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, vs + 2 * (v_lane + kc * 16 * T::kPitch + dp * 16));
          mma_16816(o[2 * dp], p, b[0], b[1]);
          mma_16816(o[2 * dp + 1], p, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's copies overwrite this tile's stage
  }

#pragma unroll
  for (int x = 1; x < 4; x <<= 1) {
    l_lo += __shfl_xor_sync(kFullMask, l_lo, x);
    l_hi += __shfl_xor_sync(kFullMask, l_hi, x);
  }
  const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
  if (row_lo < total_rows) {
    float* dst = a.out + (a.first_row + query_lo) * a.out_stride +
                 static_cast<int64_t>(head_lo) * HD + 2 * tig;
#pragma unroll
    for (int n = 0; n < 2 * kDimChunks; ++n) {
      dst[8 * n] = o[n][0] * inv_lo;
      dst[8 * n + 1] = o[n][1] * inv_lo;
    }
    if (tig == 0 && a.lse != nullptr) {
      a.lse[static_cast<int64_t>(query_lo) * a.heads + head_lo] = (m_lo + log2f(l_lo)) * kLn2;
    }
  }
  if (row_hi < total_rows) {
    float* dst = a.out + (a.first_row + query_hi) * a.out_stride +
                 static_cast<int64_t>(head_hi) * HD + 2 * tig;
#pragma unroll
    for (int n = 0; n < 2 * kDimChunks; ++n) {
      dst[8 * n] = o[n][2] * inv_hi;
      dst[8 * n + 1] = o[n][3] * inv_hi;
    }
    if (tig == 0 && a.lse != nullptr) {
      a.lse[static_cast<int64_t>(query_hi) * a.heads + head_hi] = (m_hi + log2f(l_hi)) * kLn2;
    }
  }
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

// The flash kernel copies 16-byte pieces of key and value rows.
bool takes_prefill_path(const AttentionSeq& seq) {
  return seq.kv.kind == KvView::Kind::kContiguous && seq.num_queries >= kPrefillMinQueries &&
         aligned16(seq.kv.k) && aligned16(seq.kv.v) && seq.kv.row_stride % 8 == 0;
}

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

// One flash prefill launch (its dynamic shared memory may exceed the 48 KB default: allowed
// per launch, which costs a driver call only per prefill).
template <int HD>
void launch_flash(const FlashArgs& a, unsigned blocks, cudaStream_t stream) {
  constexpr int kBytes = FlashTile<HD>::kSmemBytes;
  LS_CUDA_CHECK(cudaFuncSetAttribute(flash_prefill_kernel<HD>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  flash_prefill_kernel<HD><<<blocks, kFlashThreads, kBytes, stream>>>(a);
  LS_CUDA_LAUNCHED();
}

}  // namespace

struct CudaAttention::Impl {
  explicit Impl(CudaContext& c) : ctx(c) {}

  CudaContext& ctx;
  GenericPlan plan;              // reused: no host allocation per decode step after warm-up
  std::vector<uint8_t> host;     // the packed staging bytes
  DeviceScratch staged;          // their device copy
  DeviceScratch part_acc, part_ml;
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
  const int64_t rows = static_cast<int64_t>(seq.num_queries) * group;
  const int64_t row_tiles = (rows + kFlashRows - 1) / kFlashRows;
  const int64_t blocks = row_tiles * shape.kv_heads;
  if (row_tiles * kFlashRows > std::numeric_limits<int32_t>::max() ||
      blocks > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("CUDA attention: too many queries in one prefill");
  }
  FlashArgs a{q,
              shape.q_stride,
              seq.first_row,
              seq.kv.k,
              seq.kv.v,
              seq.kv.row_stride,
              seq.num_queries,
              seq.first_pos,
              shape.heads,
              group,
              shape.kv_heads,
              static_cast<int>(row_tiles),
              shape.scale * kLog2e,
              shape.out_stride,
              out,
              seq.lse};
  if (shape.head_dim == 64) {
    launch_flash<64>(a, static_cast<unsigned>(blocks), ctx.stream);
  } else {
    launch_flash<128>(a, static_cast<unsigned>(blocks), ctx.stream);
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
