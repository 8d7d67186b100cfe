// AMX-INT8 gemm for many tokens, on the repacked row-group layout (matmul_kernels.h).
//
// One tile op computes a 16-token × 16-row block of integer dots over one 32-value quant block:
//   A (16 tokens × 32 int8 activations, read in place, stride = cols)
//   B (8 × 64 bytes: row k holds, for each of the 16 weight rows, quants 4k..4k+3 — exactly the
//      repacked layout for Q8_0, and the nibbles spread to bytes for Q4_0/Q4_1)
//   C += A · B with TDPBSUD (signed activations × unsigned weight quants).
// The per-block scaling (d_w · d_a, offsets, Q4_1 minimums) is done in AVX-512 on C, exactly as
// the VNNI kernel does it, so both paths share the same integer dots. Two C tiles alternate so
// the tile unit works on block b + 1 while the vector units scale block b.
// Token tails (< 16) go to the AVX-512 VNNI kernel.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/scratch_buffer.h"

namespace lightserve::kernels::cpu::detail {
namespace {

constexpr int64_t kTileTokens = 16;
constexpr int64_t kTokenChunk = 256;

// Tile numbers (literals: the tile intrinsics paste them into assembly): A activations in 0/1,
// B weights in 2/3, C accumulators in 4/5.

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void configure_tiles() {
  TileConfig cfg;
  for (int a : {0, 1}) {
    cfg.rows[a] = 16;
    cfg.colsb[a] = 32;
  }
  for (int b : {2, 3}) {
    cfg.rows[b] = 8;
    cfg.colsb[b] = 64;
  }
  for (int c : {4, 5}) {
    cfg.rows[c] = 16;
    cfg.colsb[c] = 64;
  }
  // Not _tile_loadconfig: GCC 12's version declares only 8 bytes of the config as read, so the
  // stores that fill the rest may be dropped.
  __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

// Spreads a Q4 group's nibbles to one byte each: per block 8 rows of 64 bytes (B tile layout).
void unpack_group(const uint8_t* group, int64_t blocks, int64_t block_bytes, uint8_t* out) {
  const __m512i low_mask = _mm512_set1_epi8(0x0f);
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = group + b * block_bytes;
    uint8_t* dst = out + b * 512;
    for (int k = 0; k < 4; ++k) {
      const __m512i raw = _mm512_loadu_si512(blk + 64 * k);
      _mm512_store_si512(dst + 64 * k, _mm512_and_si512(raw, low_mask));
      _mm512_store_si512(dst + 256 + 64 * k, _mm512_and_si512(_mm512_srli_epi16(raw, 4), low_mask));
    }
  }
}

// acc[t] += scale of block b applied to the int32 dots in c (16 tokens × 16 rows).
template <DType kType>
inline void scale_block(const int32_t* c, const uint8_t* blk, const QuantizedActs& a, int64_t t0,
                        int64_t b, __m512* acc) {
  constexpr int64_t kQuantBytes = quant_bytes_per_row(kType) * 16;
  const __m512 dw =
      _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQuantBytes)));
  __m512 mw = _mm512_setzero_ps();
  if constexpr (kType == DType::kQ4_1) {
    mw = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQuantBytes + 32)));
  }
  for (int t = 0; t < kTileTokens; ++t) {
    const int64_t ab = (t0 + t) * a.blocks + b;
    __m512i isum = _mm512_load_si512(c + 16 * t);
    if constexpr (kType == DType::kQ4_0) {
      isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(8 * a.sum[ab]));
    }
    if constexpr (kType == DType::kQ8_0) {
      isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(128 * a.sum[ab]));
    }
    const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[ab]));
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
    if constexpr (kType == DType::kQ4_1) {
      acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.s[ab]), acc[t]);
    }
  }
}

// One row group × 16 tokens starting at t0. `bq` is the B-tile data: 512 bytes per block,
// `bq_stride` bytes apart.
template <DType kType>
void tile_16x16(const uint8_t* group, const uint8_t* bq, int64_t bq_stride, const QuantizedActs& a,
                int64_t t0, int64_t blocks, float* y, int64_t y_stride, __mmask16 mask) {
  constexpr int64_t kBlockBytes = group_block_bytes(kType);
  alignas(64) int32_t c[2][256];
  __m512 acc[kTileTokens];
  for (auto& v : acc) v = _mm512_setzero_ps();
  const int8_t* aq = a.qs + t0 * a.cols;
  const auto a_stride = static_cast<long>(a.cols);

  // Block b goes to C0 when even, C1 when odd; block b + 1 is issued before block b is scaled.
  _tile_zero(4);
  _tile_loadd(0, aq, a_stride);
  _tile_loadd(2, bq, 64);
  _tile_dpbsud(4, 0, 2);
  _tile_stored(4, c[0], 64);
  for (int64_t b = 0; b < blocks; b += 2) {
    if (b + 1 < blocks) {
      _tile_zero(5);
      _tile_loadd(1, aq + (b + 1) * 32, a_stride);
      _tile_loadd(3, bq + (b + 1) * bq_stride, 64);
      _tile_dpbsud(5, 1, 3);
      _tile_stored(5, c[1], 64);
    }
    scale_block<kType>(c[0], group + b * kBlockBytes, a, t0, b, acc);
    if (b + 1 < blocks) {
      if (b + 2 < blocks) {
        _tile_zero(4);
        _tile_loadd(0, aq + (b + 2) * 32, a_stride);
        _tile_loadd(2, bq + (b + 2) * bq_stride, 64);
        _tile_dpbsud(4, 0, 2);
        _tile_stored(4, c[0], 64);
      }
      scale_block<kType>(c[1], group + (b + 1) * kBlockBytes, a, t0, b + 1, acc);
    }
  }
  for (int t = 0; t < kTileTokens; ++t) _mm512_mask_storeu_ps(y + t * y_stride, mask, acc[t]);
}

template <DType kType>
void gemm_type(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
               int64_t t1, float* y) {
  constexpr int64_t kBlockBytes = group_block_bytes(kType);
  // Baseline-grown (kernels/cpu/scratch_buffer.h), 64-byte aligned.
  static thread_local ScratchBuffer unpacked_storage;
  uint8_t* unpacked = nullptr;
  if constexpr (kType != DType::kQ8_0) {
    unpacked = unpacked_storage.get<uint8_t>(static_cast<size_t>(w.blocks * 512));
  }
  configure_tiles();
  for (int64_t c0 = t0; c0 < t1; c0 += kTokenChunk) {
    const int64_t c1 = std::min(t1, c0 + kTokenChunk);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t valid = std::min(kGroupRows, w.rows - g * kGroupRows);
      const auto mask = static_cast<__mmask16>(valid == 16 ? 0xffff : (1u << valid) - 1);
      const uint8_t* group = w.data + g * w.group_bytes;
      const uint8_t* bq = group;
      int64_t bq_stride = kBlockBytes;
      if constexpr (kType != DType::kQ8_0) {
        unpack_group(group, w.blocks, kBlockBytes, unpacked);
        bq = unpacked;
        bq_stride = 512;
      }
      for (int64_t t = c0; t + kTileTokens <= c1; t += kTileTokens) {
        tile_16x16<kType>(group, bq, bq_stride, a, t, w.blocks, y + t * w.rows + g * kGroupRows,
                          w.rows, mask);
      }
    }
  }
  _tile_release();
}

void gemm_amx(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
              int64_t t1, float* y) {
  const int64_t full_end = t0 + (t1 - t0) / kTileTokens * kTileTokens;
  if (full_end > t0) {
    switch (w.type) {
      case DType::kQ4_0:
        gemm_type<DType::kQ4_0>(w, a, g0, g1, t0, full_end, y);
        break;
      case DType::kQ4_1:
        gemm_type<DType::kQ4_1>(w, a, g0, g1, t0, full_end, y);
        break;
      case DType::kQ8_0:
        gemm_type<DType::kQ8_0>(w, a, g0, g1, t0, full_end, y);
        break;
      default:
        break;
    }
  }
  if (full_end < t1) avx512_kernels().gemm(w, a, g0, g1, full_end, t1, y);
}

}  // namespace

const KernelSet& amx_kernels() {
  static const KernelSet set{avx512_kernels().quantize, gemm_amx, avx512_kernels().gemm_k,
                             avx512_kernels().dot_f32, kTileTokens};
  return set;
}

}  // namespace lightserve::kernels::cpu::detail
