// The prefill path of CudaAttention (cuda_attention.cu): one fused causal flash-attention kernel
// on tensor cores for a sequence whose keys are contiguous (a prompt's keys in HybridSequence's
// scratch, or a SequenceCache) and that has at least kPrefillMinQueries queries; no score matrix
// in memory. With a bf16 cache (AttentionShape::kv_type) the same kernel runs the bf16 form of
// the mma (queries, keys, values and probabilities in bf16). Its probabilities are always rounded
// to the cache type for the P·V product, whether or not round_probabilities_f16 is set: the
// unnormalized exp(s − m) ≤ 1 relative to the running row max m (relative error ≤ 2⁻¹¹ each, as
// llama.cpp's rounding of the normalized ones), normalized afterwards by the f32 sum; lse comes
// from the f32 max and sum.
#include <limits>

#include "kernels/cuda/attention_common.cuh"

namespace lightserve::kernels::cuda {
namespace {

constexpr int kPrefillMinQueries = 64;

// The kernel (FlashAttention-2 style).
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
  static constexpr int kChunksPerRow = HD / 8;  // 16-byte pieces of a key row
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

// d += a · b (m16n8k16, f16 inputs (bf16 with BF16), f32 accumulators).
template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two f32 values as a pair of the cache type (f16, or bf16 with BF16), `lo` in the low half (the
// lower column of a fragment).
template <bool BF16>
__device__ __forceinline__ uint32_t pack_kv2(float lo, float hi) {
  return static_cast<uint32_t>(float_to_kv_bits(lo, BF16)) |
         (static_cast<uint32_t>(float_to_kv_bits(hi, BF16)) << 16);
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
  float* lse;  // [num_queries × heads] or null
};

// Block b: KV head b % kv_heads, row tile row_tiles − 1 − b / kv_heads (the longest tiles, the
// last queries, start first).
template <int HD, bool BF16>
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

  // This lane's A fragments of its two rows, rounded to the cache type as the CPU rounds
  // queries.
  uint32_t qf[kDimChunks][4];
  {
    const float* q_lo =
        a.q + (a.first_row + query_lo) * a.q_stride + static_cast<int64_t>(head_lo) * HD;
    const float* q_hi =
        a.q + (a.first_row + query_hi) * a.q_stride + static_cast<int64_t>(head_hi) * HD;
#pragma unroll
    for (int kc = 0; kc < kDimChunks; ++kc) {
      const int c = kc * 16 + 2 * tig;
      qf[kc][0] = pack_kv2<BF16>(q_lo[c], q_lo[c + 1]);
      qf[kc][1] = pack_kv2<BF16>(q_hi[c], q_hi[c + 1]);
      qf[kc][2] = pack_kv2<BF16>(q_lo[c + 8], q_lo[c + 9]);
      qf[kc][3] = pack_kv2<BF16>(q_hi[c + 8], q_hi[c + 9]);
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
      cp_async_wait<1>();  // tile t has landed (this thread's copies)
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // ... and every thread's
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
          mma_16816<BF16>(s[2 * kp], qf[kc], b[0], b[1]);
          mma_16816<BF16>(s[2 * kp + 1], qf[kc], b[2], b[3]);
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
        const uint32_t p[4] = {pack_kv2<BF16>(s[2 * kc][0], s[2 * kc][1]),
                               pack_kv2<BF16>(s[2 * kc][2], s[2 * kc][3]),
                               pack_kv2<BF16>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                               pack_kv2<BF16>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
        for (int dp = 0; dp < kDimChunks; ++dp) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, vs + 2 * (v_lane + kc * 16 * T::kPitch + dp * 16));
          mma_16816<BF16>(o[2 * dp], p, b[0], b[1]);
          mma_16816<BF16>(o[2 * dp + 1], p, b[2], b[3]);
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
  // This lane's half of the output row (half 0: row gid of the warp's tile, 1: gid + 8) and the
  // row's lse; rows past the last only padded the tile.
  auto store_row = [&](int half, int32_t row, int32_t query, int head, float m, float l) {
    if (row >= total_rows) return;
    const float inv = 1.0f / l;
    float* dst =
        a.out + (a.first_row + query) * a.out_stride + static_cast<int64_t>(head) * HD + 2 * tig;
#pragma unroll
    for (int n = 0; n < 2 * kDimChunks; ++n) {
      dst[8 * n] = o[n][2 * half] * inv;
      dst[8 * n + 1] = o[n][2 * half + 1] * inv;
    }
    if (tig == 0 && a.lse != nullptr) {
      a.lse[static_cast<int64_t>(query) * a.heads + head] = (m + log2f(l)) * kLn2;
    }
  };
  store_row(0, row_lo, query_lo, head_lo, m_lo, l_lo);
  store_row(1, row_hi, query_hi, head_hi, m_hi, l_hi);
}

// One flash prefill launch (its dynamic shared memory may exceed the 48 KB default: allowed
// per launch, which costs a driver call only per prefill).
template <int HD, bool BF16>
void launch_flash(const FlashArgs& a, unsigned blocks, cudaStream_t stream) {
  constexpr int kBytes = FlashTile<HD>::kSmemBytes;
  LS_CUDA_CHECK(cudaFuncSetAttribute(flash_prefill_kernel<HD, BF16>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  flash_prefill_kernel<HD, BF16><<<blocks, kFlashThreads, kBytes, stream>>>(a);
  LS_CUDA_LAUNCHED();
}

}  // namespace

// The flash kernel copies 16-byte pieces of key and value rows.
bool takes_prefill_path(const AttentionSeq& seq) {
  return seq.kv.kind == KvView::Kind::kContiguous && seq.num_queries >= kPrefillMinQueries &&
         aligned16(seq.kv.k) && aligned16(seq.kv.v) && seq.kv.row_stride % 8 == 0;
}

void flash_prefill(CudaContext& ctx, const float* q, const AttentionSeq& seq,
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
  const bool bf16 = shape.kv_type == DType::kBF16;
  if (!is_kv_type(shape.kv_type)) {
    throw std::invalid_argument("CUDA attention: kv_type must be f16 or bf16");
  }
  if (shape.head_dim == 64) {
    if (bf16) {
      launch_flash<64, true>(a, static_cast<unsigned>(blocks), ctx.stream);
    } else {
      launch_flash<64, false>(a, static_cast<unsigned>(blocks), ctx.stream);
    }
  } else if (bf16) {
    launch_flash<128, true>(a, static_cast<unsigned>(blocks), ctx.stream);
  } else {
    launch_flash<128, false>(a, static_cast<unsigned>(blocks), ctx.stream);
  }
}

}  // namespace lightserve::kernels::cuda
