// AVX2 kernels on the repacked row-group layout (matmul_kernels.h): half a group (8 rows) per
// 256-bit vector. With AVX-VNNI the u8 × s8 dots use vpdpbusd; without it, vpmaddubsw +
// vpmaddwd (exact here: nibble × int8 pairs cannot saturate 16 bits; Q8_0 uses |w| × sign(a, w)).
// GCC 12's AVX-512 headers build "undefined" vectors as `__Y = __Y`, which -Wuninitialized
// reports at every inlined use (a known GCC bug); the pragma must precede the include.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/matmul_kernels.h"

namespace lightserve::kernels::cpu::detail {
namespace {

constexpr int kTokenTile = 4;
constexpr int64_t kTokenChunk = 128;

inline __m256i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// acc + Σ of 4 u8 × s8 products per 32-bit lane.
template <bool kVnni>
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
  if constexpr (kVnni) {
    return _mm256_dpbusd_avx_epi32(acc, u, s);
  } else {
    const __m256i pairs = _mm256_maddubs_epi16(u, s);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
}

// 8 rows (half `h` of a group) × T tokens.
template <DType kType, bool kVnni, int T>
void microkernel(const uint8_t* group, int64_t blocks, const QuantizedActs& a, int64_t t0, int h,
                 float* y, int64_t y_stride, int valid) {
  constexpr int64_t kBlockBytes = group_block_bytes(kType);
  constexpr int64_t kQuantBytes = quant_bytes_per_row(kType) * 16;
  constexpr int64_t kScales = group_scales_offset(kType);
  // Without VNNI, Q8_0 quants (stored + 128) are taken back to int8 and multiplied as
  // |w| × sign(a, w), so no offset correction applies.
  constexpr bool kSignTrick = kType == DType::kQ8_0 && !kVnni;
  constexpr int32_t kOffset = kSignTrick ? 0 : quant_offset(kType);
  const __m256i fifth_bit = _mm256_set1_epi8(0x10);
  const __m256i low_mask = _mm256_set1_epi8(0x0f);
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
  const int8_t* qs = a.qs + t0 * a.cols;
  const float* ds = a.d + t0 * a.blocks;
  const float* ss = a.s + t0 * a.blocks;
  const int32_t* sums = a.sum + t0 * a.blocks;

  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();

  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = group + b * kBlockBytes + 32 * h;
    __m256i wv[8];
    int offset[8];
    if constexpr (kType == DType::kQ8_0) {
      for (int k = 0; k < 8; ++k) {
        wv[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * k));
        if constexpr (kSignTrick) wv[k] = _mm256_xor_si256(wv[k], bias);
        offset[k] = 4 * k;
      }
    } else {
      __m256i qh = _mm256_setzero_si256();
      if constexpr (has_fifth_bits(kType)) {
        qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQuantBytes));
      }
      for (int k = 0; k < 4; ++k) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * k));
        wv[2 * k] = _mm256_and_si256(raw, low_mask);
        wv[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low_mask);
        if constexpr (has_fifth_bits(kType)) {
          // Byte i of a row's qh word holds value 4k + i's fifth bit at bit k, value
          // 16 + 4k + i's at bit 4 + k (matmul_kernels.h).
          wv[2 * k] =
              _mm256_or_si256(wv[2 * k], _mm256_and_si256(_mm256_slli_epi16(qh, 4 - k), fifth_bit));
          wv[2 * k + 1] =
              _mm256_or_si256(wv[2 * k + 1], _mm256_and_si256(_mm256_srli_epi16(qh, k), fifth_bit));
        }
        offset[2 * k] = 4 * k;
        offset[2 * k + 1] = 16 + 4 * k;
      }
    }
    const uint8_t* scales = group + b * kBlockBytes + kScales + 16 * h;
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales)));
    __m256 mw = _mm256_setzero_ps();
    if constexpr (has_minimum(kType)) {
      mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 32)));
    }
    for (int t = 0; t < T; ++t) {
      const int8_t* q = qs + t * a.cols + b * 32;
      const int64_t ab = t * a.blocks + b;
      __m256i isum = _mm256_setzero_si256();
      if constexpr (kOffset != 0) isum = _mm256_set1_epi32(-kOffset * sums[ab]);
      for (int k = 0; k < 8; ++k) {
        const __m256i act = broadcast4(q + offset[k]);
        if constexpr (kSignTrick) {
          isum = dot_u8s8<false>(isum, _mm256_abs_epi8(wv[k]), _mm256_sign_epi8(act, wv[k]));
        } else {
          isum = dot_u8s8<kVnni>(isum, wv[k], act);
        }
      }
      const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(ds[ab]));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
      if constexpr (has_minimum(kType)) {
        acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(ss[ab]), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    float* out = y + t * y_stride;
    if (valid >= 8) {
      _mm256_storeu_ps(out, acc[t]);
    } else {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, acc[t]);
      std::memcpy(out, tmp, static_cast<size_t>(valid) * sizeof(float));
    }
  }
}

template <DType kType, bool kVnni>
void gemm_type(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
               int64_t t1, float* y) {
  using Tile =
      void (*)(const uint8_t*, int64_t, const QuantizedActs&, int64_t, int, float*, int64_t, int);
  static constexpr Tile kTiles[kTokenTile + 1] = {
      nullptr, microkernel<kType, kVnni, 1>, microkernel<kType, kVnni, 2>,
      microkernel<kType, kVnni, 3>, microkernel<kType, kVnni, 4>};
  for (int64_t c0 = t0; c0 < t1; c0 += kTokenChunk) {
    const int64_t c1 = std::min(t1, c0 + kTokenChunk);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t valid = std::min(kGroupRows, w.rows - g * kGroupRows);
      const uint8_t* group = w.data + g * w.group_bytes;
      for (int h = 0; h < 2 && valid > 8 * h; ++h) {
        const int half_valid = static_cast<int>(std::min<int64_t>(8, valid - 8 * h));
        for (int64_t t = c0; t < c1; t += kTokenTile) {
          const int64_t count = std::min<int64_t>(kTokenTile, c1 - t);
          kTiles[count](group, w.blocks, a, t, h, y + t * w.rows + g * kGroupRows + 8 * h, w.rows,
                        half_valid);
        }
      }
    }
  }
}

template <bool kVnni>
void gemm_avx2(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
               int64_t t1, float* y) {
  switch (w.type) {
    case DType::kQ4_0:
      return gemm_type<DType::kQ4_0, kVnni>(w, a, g0, g1, t0, t1, y);
    case DType::kQ4_1:
      return gemm_type<DType::kQ4_1, kVnni>(w, a, g0, g1, t0, t1, y);
    case DType::kQ5_0:
      return gemm_type<DType::kQ5_0, kVnni>(w, a, g0, g1, t0, t1, y);
    case DType::kQ5_1:
      return gemm_type<DType::kQ5_1, kVnni>(w, a, g0, g1, t0, t1, y);
    case DType::kQ8_0:
      return gemm_type<DType::kQ8_0, kVnni>(w, a, g0, g1, t0, t1, y);
    default:
      return;
  }
}

// llama.cpp's quantize_row_q8_1 (x86 AVX2 path); bit-identical to quantize_block_reference.
void quantize_avx2(const float* x, int64_t t0, int64_t t1, const QuantizedActs& a) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t b = 0; b < a.blocks; ++b) {
      const float* p = x + t * a.cols + b * 32;
      __m256 v[4];
      for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(p + 8 * i);
      __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
      m = _mm256_max_ps(m,
                        _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
      __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float amax = _mm_cvtss_f32(m4);
      const float d = amax / 127.0f;
      const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
      const __m256 mul = _mm256_set1_ps(id);
      __m256i q[4];
      for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], mul),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      }
      const __m256i total =
          _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
      s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
      const int32_t sum = _mm_cvtsi128_si32(s4);
      const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
      const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23),
                                                        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.qs + t * a.cols + b * 32), bytes);
      const int64_t ab = t * a.blocks + b;
      a.d[ab] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
      a.s[ab] = _cvtsh_ss(_cvtss_sh(d * static_cast<float>(sum), _MM_FROUND_TO_NEAREST_INT));
      a.sum[ab] = sum;
    }
  }
}

struct MaddAccAvx2 {
  static __m256i apply(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
  }
};
struct MaddAccAvxVnni {
  static __m256i apply(__m256i acc, __m256i a, __m256i b) {
    return _mm256_dpwssd_avx_epi32(acc, a, b);
  }
};

#include "kernels/cpu/matmul_kquant_impl.inc"

float dot_f32_avx2(const float* a, const float* b, int64_t count) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  const __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  float sum = _mm_cvtss_f32(r);
  for (; i < count; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

const KernelSet& avx2_kernels(bool vnni) {
  static const KernelSet with_vnni{quantize_avx2, gemm_avx2<true>, gemm_kquant<MaddAccAvxVnni>,
                                   dot_f32_avx2, kTokenTile};
  static const KernelSet without_vnni{quantize_avx2, gemm_avx2<false>, gemm_kquant<MaddAccAvx2>,
                                      dot_f32_avx2, kTokenTile};
  return vnni ? with_vnni : without_vnni;
}

}  // namespace lightserve::kernels::cpu::detail
