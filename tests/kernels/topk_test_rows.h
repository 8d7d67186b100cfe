// Logits rows for the top-k tests (topk_rows_test.cpp on the CPU, cuda_topk_test.cpp on the GPU
// against the CPU): one of every kind the rank order (base/rank_order.h) has a case for, by
// row index modulo 8.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace lightserve::kernels::topk_testing {

inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
inline constexpr float kInf = std::numeric_limits<float>::infinity();

inline std::vector<float> topk_test_rows(int64_t num_rows, int64_t width, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::uniform_int_distribution<int> level(0, 40);
  std::uniform_int_distribution<int64_t> at(0, width - 1);
  std::vector<float> x(static_cast<size_t>(num_rows * width));
  for (int64_t r = 0; r < num_rows; ++r) {
    float* row = x.data() + r * width;
    for (int64_t i = 0; i < width; ++i) {  // ties: rows of a few levels
      row[i] = r % 8 == 1 ? 0.25f * static_cast<float>(level(rng)) : normal(rng);
    }
    switch (r % 8) {
      case 2:  // NaN first (ranks first), then as case 3
        row[0] = kNaN;
        [[fallthrough]];
      case 3:  // NaNs elsewhere (last), ±0 and ±inf
        for (float v : {kNaN, kNaN, kNaN, -0.0f, 0.0f, kInf, -kInf, kInf}) row[at(rng)] = v;
        break;
      case 4:  // all -0 but a few +0: ties decided by index only
        std::fill(row, row + width, -0.0f);
        for (int j = 0; j < 3; ++j) row[at(rng)] = 0.0f;
        break;
      case 5:  // ties between the largest values, spread over threads and warps
        for (int64_t i = 0; i < width; i += 997) row[i] = 30.0f;
        break;
      case 6:  // all equal
        std::fill(row, row + width, 1.5f);
        break;
      case 7:  // every value NaN
        std::fill(row, row + width, kNaN);
        break;
      default:
        break;
    }
  }
  return x;
}

}  // namespace lightserve::kernels::topk_testing
