// The scalar matmul: the oracle on file-encoded weights (reference_matmul), and the scalar
// kernel set on repacked weights, used where the CPU has no AVX2.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_kernels.h"

namespace lightserve::kernels::cpu::detail {
namespace {

float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
  return fp16_to_fp32(h);
}

// Value j (0..31) of a Q5 block's quants, 0..31.
int q5_value(const uint8_t* qs, uint32_t qh, int j) {
  const int nibble = j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4;
  return nibble | static_cast<int>(((qh >> j) & 1u) << 4);
}

// Integer dot of one file-encoded weight block with one activation block, with the weight quants
// as the signed values they encode (Q4_1 / Q5_1: without the minimum).
int32_t block_dot(DType type, const void* block, const int8_t* q) {
  int32_t sum = 0;
  switch (type) {
    case DType::kQ4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(block);
      for (int j = 0; j < 16; ++j) {
        sum += ((b->qs[j] & 0x0f) - 8) * q[j] + ((b->qs[j] >> 4) - 8) * q[j + 16];
      }
      break;
    }
    case DType::kQ4_1: {
      const auto* b = static_cast<const BlockQ4_1*>(block);
      for (int j = 0; j < 16; ++j) sum += (b->qs[j] & 0x0f) * q[j] + (b->qs[j] >> 4) * q[j + 16];
      break;
    }
    case DType::kQ5_0: {
      const auto* b = static_cast<const BlockQ5_0*>(block);
      uint32_t qh;
      std::memcpy(&qh, b->qh, 4);
      for (int j = 0; j < 32; ++j) sum += (q5_value(b->qs, qh, j) - 16) * q[j];
      break;
    }
    case DType::kQ5_1: {
      const auto* b = static_cast<const BlockQ5_1*>(block);
      uint32_t qh;
      std::memcpy(&qh, b->qh, 4);
      for (int j = 0; j < 32; ++j) sum += q5_value(b->qs, qh, j) * q[j];
      break;
    }
    case DType::kQ8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(block);
      for (int j = 0; j < 32; ++j) sum += b->qs[j] * q[j];
      break;
    }
    default:
      break;
  }
  return sum;
}

// Unpacks the 6-bit scales and minimums of a Q4_K / Q5_K block.
void unpack_scales_mins(const uint8_t* packed, int32_t* scales, int32_t* mins) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    kquant_scale_min(j, packed, &sc, &m);
    scales[j] = sc;
    mins[j] = m;
  }
}

// llama.cpp's generic K-quant dot, given each super-block's weight values (`values`: the
// unsigned quants, with Q6_K's −32 applied), per-value scales and the minimum term. The integer
// sums are split in 8 lanes by value index mod 8 and scaled in f32 per lane and super-block,
// exactly as ggml_vec_dot_q4_K_q8_K_generic and its siblings do.
struct KQuantSuperBlock {
  int8_t values[kSuperBlock];
  int32_t scales[kSuperBlock / 16];  // per 16 values
  int32_t min_sum = 0;               // Σ bsums · mins (Q4_K / Q5_K)
  float d = 0.0f;                    // f16 d, widened
  float dmin = 0.0f;
};

KQuantSuperBlock decode_superblock(DType type, const uint8_t* block, const BlockQ8_K& act) {
  KQuantSuperBlock sb;
  if (type == DType::kQ6_K) {
    const auto* b = reinterpret_cast<const BlockQ6_K*>(block);
    const uint8_t* ql = b->ql;
    const uint8_t* qh = b->qh;
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32) {
      int8_t* v = sb.values + 128 * half;
      for (int l = 0; l < 32; ++l) {
        v[l] = static_cast<int8_t>(((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32);
        v[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
        v[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        v[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    for (int j = 0; j < 16; ++j) sb.scales[j] = b->scales[j];
    sb.d = fp16_to_fp32(b->d);
    return sb;
  }
  // Q4_K and Q5_K share the header (d, dmin, scales) and the nibble layout.
  const auto* b = reinterpret_cast<const BlockQ4_K*>(block);
  const uint8_t* qs = b->qs;
  const uint8_t* qh =
      type == DType::kQ5_K ? reinterpret_cast<const BlockQ5_K*>(block)->qh : nullptr;
  if (type == DType::kQ5_K) qs = reinterpret_cast<const BlockQ5_K*>(block)->qs;
  for (int chunk = 0; chunk < 4; ++chunk) {
    int8_t* v = sb.values + 64 * chunk;
    for (int l = 0; l < 32; ++l) {
      int low = qs[32 * chunk + l] & 0x0f, high = qs[32 * chunk + l] >> 4;
      if (qh != nullptr) {
        low += ((qh[l] >> (2 * chunk)) & 1) * 16;
        high += ((qh[l] >> (2 * chunk + 1)) & 1) * 16;
      }
      v[l] = static_cast<int8_t>(low);
      v[l + 32] = static_cast<int8_t>(high);
    }
  }
  int32_t scales[8], mins[8];
  unpack_scales_mins(b->scales, scales, mins);
  for (int j = 0; j < 16; ++j) {
    sb.scales[j] = scales[j / 2];
    sb.min_sum += act.bsums[j] * mins[j / 2];
  }
  sb.d = fp16_to_fp32(b->d);
  sb.dmin = fp16_to_fp32(b->dmin);
  return sb;
}

bool is_group_quantized(DType type) {
  return is_group_type(type);
}

void quantize_scalar(const float* x, int64_t t0, int64_t t1, const QuantizedActs& a) {
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t b = 0; b < a.blocks; ++b) {
      const Q8Block block = quantize_block_reference(x + t * a.cols + b * 32);
      std::memcpy(a.qs + t * a.cols + b * 32, block.qs, 32);
      a.d[t * a.blocks + b] = fp16_to_fp32(block.d);
      a.s[t * a.blocks + b] = fp16_to_fp32(block.s);
      a.sum[t * a.blocks + b] = block.sum;
    }
  }
}

// The repacked layout read one value at a time: the scalar twin of the SIMD kernels.
void gemm_scalar(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
                 int64_t t1, float* y) {
  const int64_t qbytes = quant_bytes_per_row(w.type);
  const int64_t block_bytes = group_block_bytes(w.type);
  const int64_t scales = group_scales_offset(w.type);
  const bool fifth_bits = has_fifth_bits(w.type);
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t valid = std::min(kGroupRows, w.rows - g * kGroupRows);
    for (int64_t t = t0; t < t1; ++t) {
      float acc[kGroupRows] = {};
      for (int64_t b = 0; b < w.blocks; ++b) {
        const uint8_t* blk = w.data + g * w.group_bytes + b * block_bytes;
        const int8_t* q = a.qs + t * a.cols + b * 32;
        const float da = a.d[t * a.blocks + b];
        for (int64_t r = 0; r < kGroupRows; ++r) {
          int32_t isum = 0;
          uint32_t qh = 0;
          if (fifth_bits) {
            uint32_t packed;
            std::memcpy(&packed, blk + qbytes * 16 + 4 * r, 4);
            qh = unpack_fifth_bits(packed);
          }
          for (int64_t j = 0; j < qbytes; ++j) {
            const uint8_t byte = blk[(j / 4) * 64 + r * 4 + j % 4];
            if (w.type == DType::kQ8_0) {
              isum += static_cast<int32_t>(byte) * q[j];
            } else {
              const auto low = static_cast<int32_t>((byte & 0x0f) | (((qh >> j) & 1u) << 4));
              const auto high = static_cast<int32_t>((byte >> 4) | (((qh >> (j + 16)) & 1u) << 4));
              isum += low * q[j] + high * q[j + 16];
            }
          }
          isum -= quant_offset(w.type) * a.sum[t * a.blocks + b];
          const float dw = f16(blk + scales + 2 * r);
          if (w.type == DType::kQ5_1) {
            acc[r] += dw * da * static_cast<float>(isum) +
                      f16(blk + scales + 32 + 2 * r) * a.s[t * a.blocks + b];
            continue;
          }
          acc[r] += dw * da * static_cast<float>(isum);
          if (w.type == DType::kQ4_1)
            acc[r] += f16(blk + scales + 32 + 2 * r) * a.s[t * a.blocks + b];
        }
      }
      for (int64_t r = 0; r < valid; ++r) y[t * w.rows + g * kGroupRows + r] = acc[r];
    }
  }
}

void gemm_k_scalar(const KQuantWeight& w, const BlockQ8_K* acts, int64_t r0, int64_t r1, int64_t t0,
                   int64_t t1, float* y) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data + r * w.row_bytes;
    for (int64_t t = t0; t < t1; ++t) {
      y[t * w.rows + r] = kquant_dot_reference(w.type, row, acts + t * w.blocks, w.blocks);
    }
  }
}

float dot_scalar(const float* a, const float* b, int64_t count) {
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

Q8Block quantize_block_reference(const float* x) {
  Q8Block out;
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  out.d = fp32_to_fp16(d);
  int32_t sum = 0;
  for (int j = 0; j < 32; ++j) {
    // nearbyint rounds half to even under the default rounding mode, as vroundps / vcvtps2dq.
    const int32_t q = static_cast<int32_t>(std::nearbyint(x[j] * id));
    out.qs[j] = static_cast<int8_t>(q);
    sum += q;
  }
  out.sum = sum;
  out.s = fp32_to_fp16(d * static_cast<float>(sum));
  return out;
}

BlockQ8_K quantize_block_q8k_reference(const float* x) {
  BlockQ8_K out{};
  float max = 0.0f, amax = 0.0f;
  for (int64_t j = 0; j < kSuperBlock; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  if (amax == 0.0f) return out;  // d = 0, quants and sums 0
  const float iscale = -127.0f / max;
  for (int64_t j = 0; j < kSuperBlock; ++j) {
    // ggml's nearest_int: round half to even (|iscale · x| ≤ 127 here).
    const auto v = static_cast<int32_t>(std::nearbyint(iscale * x[j]));
    out.qs[j] = static_cast<int8_t>(std::min(127, v));
  }
  for (int j = 0; j < 16; ++j) {
    int32_t sum = 0;
    for (int i = 0; i < 16; ++i) sum += out.qs[16 * j + i];
    out.bsums[j] = static_cast<int16_t>(sum);
  }
  out.d = 1.0f / iscale;
  return out;
}

float kquant_dot_reference(DType type, const void* row, const BlockQ8_K* acts, int64_t blocks) {
  const int64_t block_bytes = traits(type).block_bytes;
  float lane_sums[8] = {};
  float sum = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) {
    const BlockQ8_K& act = acts[b];
    const KQuantSuperBlock sb =
        decode_superblock(type, static_cast<const uint8_t*>(row) + b * block_bytes, act);
    int32_t lanes[8] = {};
    for (int64_t i = 0; i < kSuperBlock; ++i) {
      lanes[i % 8] += sb.scales[i / 16] * (sb.values[i] * act.qs[i]);
    }
    const float d = sb.d * act.d;
    for (int l = 0; l < 8; ++l) lane_sums[l] += d * static_cast<float>(lanes[l]);
    if (type != DType::kQ6_K) {
      const float dmin = sb.dmin * act.d;
      sum -= dmin * static_cast<float>(sb.min_sum);
    }
  }
  for (float lane : lane_sums) sum += lane;
  return sum;
}

void reference_matmul(std::span<const WeightView> parts, const float* x, int64_t n, float* y) {
  if (parts.empty()) return;
  const DType type = parts[0].type;
  const int64_t cols = parts[0].cols;
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.rows;
  const int64_t row_size = *row_bytes(type, cols);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<Q8Block> acts;
  std::vector<BlockQ8_K> acts_k;
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    if (is_group_quantized(type)) {
      acts.resize(static_cast<size_t>(cols / 32));
      for (int64_t b = 0; b < cols / 32; ++b) acts[b] = quantize_block_reference(xt + b * 32);
    }
    if (is_kquant(type)) {
      acts_k.resize(static_cast<size_t>(cols / kSuperBlock));
      for (int64_t b = 0; b < cols / kSuperBlock; ++b) {
        acts_k[b] = quantize_block_q8k_reference(xt + b * kSuperBlock);
      }
    }
    int64_t out_row = 0;
    for (const auto& p : parts) {
      for (int64_t r = 0; r < p.rows; ++r, ++out_row) {
        const auto* src = static_cast<const uint8_t*>(p.data) + r * row_size;
        float result = 0.0f;
        if (is_kquant(type)) {
          result = kquant_dot_reference(type, src, acts_k.data(), cols / kSuperBlock);
        } else if (is_group_quantized(type)) {
          const int64_t block_size = traits(type).block_bytes;
          for (int64_t b = 0; b < cols / 32; ++b) {
            const uint8_t* blk = src + b * block_size;
            const int32_t isum = block_dot(type, blk, acts[b].qs);
            if (type == DType::kQ5_1) {
              // ggml_vec_dot_q5_1_q8_1: one sum of the scaled dot and the minimum term.
              result += f16(blk) * fp16_to_fp32(acts[b].d) * static_cast<float>(isum) +
                        f16(blk + 2) * fp16_to_fp32(acts[b].s);
              continue;
            }
            result += f16(blk) * fp16_to_fp32(acts[b].d) * static_cast<float>(isum);
            if (type == DType::kQ4_1) result += f16(blk + 2) * fp16_to_fp32(acts[b].s);
          }
        } else {
          dequantize_row(type, src, row.data(), cols);
          double sum = 0.0;
          for (int64_t i = 0; i < cols; ++i) sum += static_cast<double>(row[i]) * xt[i];
          result = static_cast<float>(sum);
        }
        y[t * rows + out_row] = result;
      }
    }
  }
}

const KernelSet& scalar_kernels() {
  static const KernelSet set{quantize_scalar, gemm_scalar, gemm_k_scalar, dot_scalar, 1};
  return set;
}

}  // namespace lightserve::kernels::cpu::detail
