// Backend::argmax_rows' default (what the CPU backend runs; the CUDA kernel is checked against
// the same rule in cuda_fusion_test.cpp): std::max_element per row, as sampling::argmax.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include "kernels/backend.h"

namespace lightserve::kernels {
namespace {

TEST(ArgmaxRows, CpuBackendIsMaxElementPerRow) {
  auto cpu = make_cpu_backend(1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t width = 1000;
  std::vector<std::vector<float>> rows;
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int r = 0; r < 6; ++r) {
    std::vector<float> row(width);
    for (auto& v : row) v = dist(rng);
    rows.push_back(row);
  }
  rows[1][10] = rows[1][900] = 9.0f;  // tie: the first
  rows[2][0] = nan;                   // NaN first: kept (index 0)
  rows[2][500] = 50.0f;               //
  std::fill(rows[3].begin(), rows[3].end(), -inf);
  rows[3][3] = nan;    // later NaN skipped: the first -inf
  rows[4][999] = inf;  // the last value
  std::vector<float> x;
  for (const auto& row : rows) x.insert(x.end(), row.begin(), row.end());
  const std::vector<int32_t> want = {
      static_cast<int32_t>(std::max_element(rows[0].begin(), rows[0].end()) - rows[0].begin()),
      10,
      0,
      0,
      999,
      static_cast<int32_t>(std::max_element(rows[5].begin(), rows[5].end()) - rows[5].begin())};
  std::vector<int32_t> got(rows.size(), -1);
  cpu->argmax_rows(x.data(), static_cast<int64_t>(rows.size()), width, got.data());
  EXPECT_EQ(got, want);
  // n = 0 writes nothing.
  int32_t untouched = -7;
  cpu->argmax_rows(x.data(), 0, width, &untouched);
  EXPECT_EQ(untouched, -7);
}

}  // namespace
}  // namespace lightserve::kernels
