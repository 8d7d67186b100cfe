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

// Integer dot of one file-encoded weight block with one activation block; `offset` is the value
// the encoding subtracts from every quant (8 for Q4_0).
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

bool is_quantized(DType type) {
  return type == DType::kQ4_0 || type == DType::kQ4_1 || type == DType::kQ8_0;
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
          for (int64_t j = 0; j < qbytes; ++j) {
            const uint8_t byte = blk[(j / 4) * 64 + r * 4 + j % 4];
            if (w.type == DType::kQ8_0) {
              isum += (static_cast<int32_t>(byte) - 128) * q[j];
            } else {
              isum += (byte & 0x0f) * q[j] + (byte >> 4) * q[j + 16];
            }
          }
          if (w.type == DType::kQ4_0) isum -= 8 * a.sum[t * a.blocks + b];
          const float dw = f16(blk + qbytes * 16 + 2 * r);
          acc[r] += dw * da * static_cast<float>(isum);
          if (w.type == DType::kQ4_1) {
            acc[r] += f16(blk + qbytes * 16 + 32 + 2 * r) * a.s[t * a.blocks + b];
          }
        }
      }
      for (int64_t r = 0; r < valid; ++r) y[t * w.rows + g * kGroupRows + r] = acc[r];
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

void reference_matmul(std::span<const WeightView> parts, const float* x, int64_t n, float* y) {
  if (parts.empty()) return;
  const DType type = parts[0].type;
  const int64_t cols = parts[0].cols;
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.rows;
  const int64_t row_size = *row_bytes(type, cols);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<Q8Block> acts;
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    if (is_quantized(type)) {
      acts.resize(static_cast<size_t>(cols / 32));
      for (int64_t b = 0; b < cols / 32; ++b) acts[b] = quantize_block_reference(xt + b * 32);
    }
    int64_t out_row = 0;
    for (const auto& p : parts) {
      for (int64_t r = 0; r < p.rows; ++r, ++out_row) {
        const auto* src = static_cast<const uint8_t*>(p.data) + r * row_size;
        float result = 0.0f;
        if (is_quantized(type)) {
          const int64_t block_size = traits(type).block_bytes;
          for (int64_t b = 0; b < cols / 32; ++b) {
            const uint8_t* blk = src + b * block_size;
            const int32_t isum = block_dot(type, blk, acts[b].qs);
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
  static const KernelSet set{quantize_scalar, gemm_scalar, dot_scalar, 1};
  return set;
}

}  // namespace lightserve::kernels::cpu::detail
