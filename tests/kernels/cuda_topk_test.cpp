// Backend::topk_rows on the GPU (kernels/cuda/topk.cu) against the CPU backend's (the oracle,
// topk_rows_test.cpp), bit for bit: the vocabularies of the default model (49,152) and Llama 3
// (128,256), k from 1 to the cap, rows of normal logits, of a few levels (ties across threads and
// warps), with NaN first and elsewhere, ±0, ±inf, all equal, all NaN; a row list out of order with
// repeats; and k over the width (pads).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/topk.h"
#include "tests/kernels/cuda_test_support.h"
#include "tests/kernels/topk_test_rows.h"

namespace lightserve::kernels {
namespace {

using cuda_testing::CudaBackendTest;
using cuda_testing::to_backend;

class CudaTopkTest : public CudaBackendTest {};

TEST_F(CudaTopkTest, MatchesTheCpuBitForBit) {
  std::mt19937 rng(21);
  for (const int64_t width : {int64_t{49152}, int64_t{128256}}) {
    const int64_t num_rows = 16;
    const std::vector<float> x = topk_testing::topk_test_rows(num_rows, width, rng);
    const Buffer gx = to_backend(gpu(), x);
    std::vector<int32_t> rows;
    for (int32_t r = num_rows - 1; r >= 0; --r) rows.push_back(r);
    rows.push_back(3);
    rows.push_back(3);
    for (const int32_t k : {1, 2, 8, 40, 64, 256}) {
      const size_t count = rows.size() * static_cast<size_t>(k);
      std::vector<Ranked> want(count), got(count, Ranked{-7, 0.0f});
      cpu().topk_rows(x.data(), width, rows, k, want.data());
      gpu().topk_rows(gx.get<float>(), width, rows, k, got.data());
      int64_t bad = 0;
      for (size_t i = 0; i < count; ++i) {
        if (got[i].id == want[i].id &&
            std::memcmp(&got[i].value, &want[i].value, sizeof(float)) == 0) {
          continue;
        }
        if (bad++ < 5) {
          ADD_FAILURE() << "width " << width << " k " << k << ": row " << rows[i / k] << " rank "
                        << i % k << " got (" << got[i].id << ", " << got[i].value << "), want ("
                        << want[i].id << ", " << want[i].value << ")";
        }
      }
      EXPECT_EQ(bad, 0) << "width " << width << " k " << k;
    }
  }
}

TEST_F(CudaTopkTest, KOverTheWidthSortsEverythingAndPads) {
  std::mt19937 rng(22);
  for (const int64_t width : {int64_t{1}, int64_t{33}, int64_t{200}}) {
    const std::vector<float> x = topk_testing::topk_test_rows(4, width, rng);
    const Buffer gx = to_backend(gpu(), x);
    const std::vector<int32_t> rows = {0, 1, 2, 3};
    const int32_t k = kMaxTopK;
    std::vector<Ranked> want(rows.size() * k), got(rows.size() * k);
    cpu().topk_rows(x.data(), width, rows, k, want.data());
    gpu().topk_rows(gx.get<float>(), width, rows, k, got.data());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i].id, want[i].id) << "width " << width << " at " << i;
      ASSERT_EQ(std::isnan(got[i].value), std::isnan(want[i].value));
      if (!std::isnan(want[i].value)) {
        ASSERT_EQ(got[i].value, want[i].value);
      }
    }
  }
}

}  // namespace
}  // namespace lightserve::kernels
