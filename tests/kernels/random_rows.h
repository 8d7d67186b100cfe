// File-encoded random weight rows of one type, for the matmul tests of every backend.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype.h"

namespace lightserve::kernels::testing {

// Rows of `cols` values in `type`'s file encoding: uniform values in [-1, 1] for float types
// (rounded to f16-representable values when f16_values, so that a backend holding weights in f16
// computes with exactly these), random quants with small positive scales for block types (every
// other byte of a block, K-quant sub-block scales and fifth / sixth bits included, is random).
inline std::vector<uint8_t> random_rows(DType type, int64_t rows, int64_t cols, std::mt19937& rng,
                                        bool f16_values = false) {
  const int64_t bytes = *row_bytes(type, cols) * rows;
  std::vector<uint8_t> data(static_cast<size_t>(bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  auto put16 = [](uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); };
  switch (type) {
    case DType::kF32:
      for (int64_t i = 0; i < rows * cols; ++i) {
        float v = value(rng);
        if (f16_values) v = fp16_to_fp32(fp32_to_fp16(v));
        std::memcpy(data.data() + 4 * i, &v, 4);
      }
      break;
    case DType::kF16:
      for (int64_t i = 0; i < rows * cols; ++i)
        put16(data.data() + 2 * i, fp32_to_fp16(value(rng)));
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < rows * cols; ++i) {
        const float v = value(rng);
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        put16(data.data() + 2 * i, static_cast<uint16_t>(bits >> 16));
      }
      break;
    default: {
      const int64_t block = traits(type).block_bytes;
      for (int64_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>(byte(rng));
      for (int64_t off = 0; off < bytes; off += block) {
        uint8_t* b = data.data() + off;
        switch (type) {
          case DType::kQ4_1:
          case DType::kQ5_1:
            put16(b, fp32_to_fp16(scale(rng)));
            put16(b + 2, fp32_to_fp16(-8 * scale(rng)));
            break;
          case DType::kQ4_K:
          case DType::kQ5_K:  // d and dmin scale 6-bit sub-block scales and minimums
            put16(b, fp32_to_fp16(scale(rng) / 32));
            put16(b + 2, fp32_to_fp16(scale(rng) / 8));
            break;
          case DType::kQ6_K:  // d last; sub-block scales are signed 8-bit
            put16(b + 208, fp32_to_fp16(scale(rng) / 64));
            break;
          default:
            put16(b, fp32_to_fp16(scale(rng)));
        }
      }
    }
  }
  return data;
}

}  // namespace lightserve::kernels::testing
