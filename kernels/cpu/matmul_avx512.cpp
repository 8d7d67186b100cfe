// AVX-512 + VNNI kernels on the repacked row-group layout (matmul_kernels.h). Compiled with
// AVX-512 flags; reached only when CpuFeatures reports avx512 and avx512_vnni.
// GCC 12's AVX-512 headers build "undefined" vectors as `__Y = __Y`, which -Wuninitialized
// reports at every inlined use (a known GCC bug); the pragma must precede the include.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "base/check.h"
#include "kernels/cpu/matmul_kernels.h"

namespace lightserve::kernels::cpu::detail {
namespace {

// Tokens one microkernel call handles at most: 16 accumulators + 8 unpacked weight vectors + the
// block's scales fit the 32 zmm registers, so each weight block is unpacked once per 16 tokens.
// Q5 types need two more registers for their fifth bits and keep 8.
constexpr int kTokenTile = 16;
template <DType kType>
constexpr int max_tile() {
  return has_fifth_bits(kType) ? 8 : kTokenTile;
}
// Tokens per outer chunk: the chunk's quantized activations stay in L2 while every row group
// of this thread sweeps over them.
constexpr int64_t kTokenChunk = 128;

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The activations' tile layout (matmul_kernels.h) from token t to the end of its tile, as four
// pointers the microkernel offsets by constants.
struct TileActs {
  static constexpr int64_t kQuantBytes = 32 * kActTileTokens;  // per block
  int8_t* qs = nullptr;
  float* d = nullptr;
  float* s = nullptr;
  int32_t* sum = nullptr;
};

TileActs tile_at(const QuantizedActs& a, int64_t t) {
  uint8_t* tile = a.tiles + t / kActTileTokens * act_tile_bytes(a.blocks);
  const int64_t slot = t % kActTileTokens;
  auto* d = reinterpret_cast<float*>(tile + a.blocks * TileActs::kQuantBytes);
  float* s = d + a.blocks * kActTileTokens;
  auto* sum = reinterpret_cast<int32_t*>(s + a.blocks * kActTileTokens);
  return {reinterpret_cast<int8_t*>(tile) + 32 * slot, d + slot, s + slot, sum + slot};
}

// 16 rows (one group) × T tokens from one tile. y points at (the tile's first token, first
// row of the group); rows of y are `y_stride` floats apart; `mask` selects the group's real rows.
//
// Every output is Σ over blocks, in block order, of fma(float(isum), d_w · d_a, acc) (then
// fma(m_w, s_a, acc) with minimums), whatever T is: the integer dots are exact in any order, so
// the tile size and the number of integer chains never change a bit of y.
template <DType kType, int T>
inline void microkernel(const uint8_t* group, int64_t blocks, const TileActs& a, float* y,
                        int64_t y_stride, __mmask16 mask) {
  constexpr int64_t kBlockBytes = group_block_bytes(kType);
  constexpr int64_t kQuantBytes = quant_bytes_per_row(kType) * 16;
  constexpr int64_t kScales = group_scales_offset(kType);
  constexpr int32_t kOffset = quant_offset(kType);
  const __m512i low_mask = _mm512_set1_epi8(0x0f);
  const __m512i fifth_bit = _mm512_set1_epi8(0x10);

  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();

  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = group + b * kBlockBytes;
    // wv[k]: 16 rows × 4 quants, against activation bytes offset[k] .. offset[k] + 3.
    __m512i wv[8];
    int offset[8];
    if constexpr (kType == DType::kQ8_0) {
      for (int k = 0; k < 8; ++k) {
        wv[k] = _mm512_loadu_si512(blk + 64 * k);
        offset[k] = 4 * k;
      }
    } else {
      __m512i qh = _mm512_setzero_si512();
      if constexpr (has_fifth_bits(kType)) qh = _mm512_loadu_si512(blk + kQuantBytes);
      for (int k = 0; k < 4; ++k) {
        const __m512i raw = _mm512_loadu_si512(blk + 64 * k);
        wv[2 * k] = _mm512_and_si512(raw, low_mask);
        wv[2 * k + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low_mask);
        if constexpr (has_fifth_bits(kType)) {
          // Byte i of a row's qh word holds value 4k + i's fifth bit at bit k, value
          // 16 + 4k + i's at bit 4 + k (matmul_kernels.h).
          wv[2 * k] = _mm512_ternarylogic_epi32(wv[2 * k], _mm512_slli_epi16(qh, 4 - k), fifth_bit,
                                                0xf8);  // a | (b & c)
          wv[2 * k + 1] =
              _mm512_ternarylogic_epi32(wv[2 * k + 1], _mm512_srli_epi16(qh, k), fifth_bit, 0xf8);
        }
        offset[2 * k] = 4 * k;
        offset[2 * k + 1] = 16 + 4 * k;
      }
    }
    const __m512 dw =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kScales)));
    __m512 mw = _mm512_setzero_ps();
    if constexpr (has_minimum(kType)) {
      mw =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kScales + 32)));
    }
    const int8_t* qb = a.qs + b * TileActs::kQuantBytes;
    const float* db = a.d + b * kActTileTokens;
    const float* sb = a.s + b * kActTileTokens;
    const int32_t* sumb = a.sum + b * kActTileTokens;
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const int8_t* q = qb + 32 * t;
      // Unsigned weight quants carry an offset (Q4_0: nibble = q + 8; Q8_0: stored q + 128);
      // start the integer sum at −offset · Σa to cancel it exactly.
      __m512i isum0 = _mm512_setzero_si512();
      if constexpr (kOffset != 0) isum0 = _mm512_set1_epi32(-kOffset * sumb[t]);
      if constexpr (T <= 2) {
        // Few tokens: two dependency chains instead of one long one.
        __m512i isum1 = _mm512_setzero_si512();
        for (int k = 0; k < 8; k += 2) {
          isum0 = _mm512_dpbusd_epi32(isum0, wv[k], broadcast4(q + offset[k]));
          isum1 = _mm512_dpbusd_epi32(isum1, wv[k + 1], broadcast4(q + offset[k + 1]));
        }
        isum0 = _mm512_add_epi32(isum0, isum1);
      } else {
        for (int k = 0; k < 8; ++k) {
          isum0 = _mm512_dpbusd_epi32(isum0, wv[k], broadcast4(q + offset[k]));
        }
      }
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(db[t]));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum0), scale, acc[t]);
      if constexpr (has_minimum(kType)) {
        acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(sb[t]), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + t * y_stride, mask, acc[t]);
}

template <DType kType, int T>
void tile_call(const uint8_t* group, int64_t blocks, const TileActs& a, float* y, int64_t y_stride,
               __mmask16 mask) {
  microkernel<kType, T>(group, blocks, a, y, y_stride, mask);
}

using Tile = void (*)(const uint8_t*, int64_t, const TileActs&, float*, int64_t, __mmask16);

template <DType kType, int... Ts>
constexpr std::array<Tile, sizeof...(Ts) + 1> make_tiles(std::integer_sequence<int, Ts...>) {
  return {nullptr, tile_call<kType, Ts + 1>...};
}

template <DType kType>
void gemm_type(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
               int64_t t1, float* y) {
  constexpr int kTile = max_tile<kType>();
  // kTiles[count]: the microkernel for `count` tokens.
  static constexpr auto kTiles = make_tiles<kType>(std::make_integer_sequence<int, kTile>{});
  for (int64_t c0 = t0; c0 < t1; c0 += kTokenChunk) {
    const int64_t c1 = std::min(t1, c0 + kTokenChunk);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t valid = std::min(kGroupRows, w.rows - g * kGroupRows);
      const auto mask = static_cast<__mmask16>(valid == 16 ? 0xffff : (1u << valid) - 1);
      const uint8_t* group = w.data + g * w.group_bytes;
      for (int64_t t = c0; t < c1; t += kTile) {
        const int64_t count = std::min<int64_t>(kTile, c1 - t);
        kTiles[count](group, w.blocks, tile_at(a, t), y + t * w.rows + g * kGroupRows, w.rows,
                      mask);
      }
    }
  }
}

void gemm_avx512(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
                 int64_t t1, float* y) {
  // A microkernel call reads one tile: calls start at multiples of their tile size.
  LS_CHECK(a.tiles != nullptr && t0 % kTokenTile == 0) << "t0 " << t0;
  switch (w.type) {
    case DType::kQ4_0:
      return gemm_type<DType::kQ4_0>(w, a, g0, g1, t0, t1, y);
    case DType::kQ4_1:
      return gemm_type<DType::kQ4_1>(w, a, g0, g1, t0, t1, y);
    case DType::kQ5_0:
      return gemm_type<DType::kQ5_0>(w, a, g0, g1, t0, t1, y);
    case DType::kQ5_1:
      return gemm_type<DType::kQ5_1>(w, a, g0, g1, t0, t1, y);
    case DType::kQ8_0:
      return gemm_type<DType::kQ8_0>(w, a, g0, g1, t0, t1, y);
    default:
      return;
  }
}

// AVX-512 VNNI's 256-bit form: one vpdpwssd per chunk.
struct MaddAccVnni256 {
  static __m256i apply(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
};

#include "kernels/cpu/matmul_kquant_impl.inc"

}  // namespace

// llama.cpp's quantize_row_q8_1 (x86), 16 lanes at a time; bit-identical to
// quantize_block_reference.
void quantize_avx512(const float* x, int64_t t0, int64_t t1, const QuantizedActs& a) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t b = 0; b < a.blocks; ++b) {
      const float* p = x + t * a.cols + b * 32;
      const __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
      const __m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
      const float amax = _mm512_reduce_max_ps(m);
      const float d = amax / 127.0f;
      const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
      const __m512 mul = _mm512_set1_ps(id);
      constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
      const __m512i q0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, mul), kRound);
      const __m512i q1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, mul), kRound);
      const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
      int8_t* out = a.qs + t * a.cols + b * 32;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm512_cvtsepi32_epi8(q1));
      const int64_t ab = t * a.blocks + b;
      a.d[ab] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
      a.s[ab] = _cvtsh_ss(_cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT));
      a.sum[ab] = sum;
      if (a.tiles != nullptr) {
        const TileActs tile = tile_at(a, t);
        std::memcpy(tile.qs + b * TileActs::kQuantBytes, out, 32);
        tile.d[b * kActTileTokens] = a.d[ab];
        tile.s[b * kActTileTokens] = a.s[ab];
        tile.sum[b * kActTileTokens] = sum;
      }
    }
  }
}

float dot_f32_avx512(const float* a, const float* b, int64_t count) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < count; i += 16) {
    const int64_t left = std::min<int64_t>(16, count - i);
    const auto mask = static_cast<__mmask16>(left == 16 ? 0xffff : (1u << left) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i),
                           acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

const KernelSet& avx512_kernels() {
  static const KernelSet set{quantize_avx512, gemm_avx512, gemm_kquant<MaddAccVnni256>,
                             dot_f32_avx512, kTokenTile};
  return set;
}

}  // namespace lightserve::kernels::cpu::detail
