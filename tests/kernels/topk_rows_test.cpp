// Backend::topk_rows' default (what the CPU backend runs; the CUDA kernel is compared with it in
// cuda_topk_test.cpp): per listed row its k best (id, value) in rank order (kernels/topk.h) —
// checked against a full sort by a comparator written on floats, on rows with ties, NaN (first
// and elsewhere), ±0 and ±inf; k = 1 is argmax_rows; k ≥ width pads; rows may be listed in any
// order, twice, or not at all.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/topk.h"
#include "tests/kernels/topk_test_rows.h"

namespace lightserve::kernels {
namespace {

using topk_testing::kInf;
using topk_testing::kNaN;

// The rank order spelled out on floats: a NaN at index 0 first, other NaNs last, numbers by value
// (−0 = +0) then index.
bool before(const Ranked& a, const Ranked& b) {
  auto rank_class = [](const Ranked& r) { return std::isnan(r.value) ? (r.id == 0 ? 0 : 2) : 1; };
  if (rank_class(a) != rank_class(b)) return rank_class(a) < rank_class(b);
  if (rank_class(a) == 1 && a.value != b.value) return a.value > b.value;
  return a.id < b.id;
}

std::vector<Ranked> reference(const float* row, int64_t width, int32_t k) {
  std::vector<Ranked> all;
  for (int64_t i = 0; i < width; ++i) all.push_back({static_cast<int32_t>(i), row[i]});
  std::sort(all.begin(), all.end(), before);
  all.resize(static_cast<size_t>(std::min<int64_t>(k, width)));
  while (static_cast<int32_t>(all.size()) < k) all.push_back({-1, kNaN});
  return all;
}

bool same(const Ranked& a, const Ranked& b) {  // the value bit for bit (NaN, −0 included)
  return a.id == b.id && std::memcmp(&a.value, &b.value, sizeof(float)) == 0;
}

TEST(TopkRows, CpuBackendIsTheRankOrdersFirstK) {
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(11);
  for (const int64_t width : {1, 7, 300, 5000}) {
    const int64_t num_rows = 12;
    const std::vector<float> x = topk_testing::topk_test_rows(num_rows, width, rng);
    const std::vector<int32_t> rows = {3, 0, 11, 5, 5, 2, 7, 1, 4, 9};  // any order, twice, gaps
    for (const int32_t k : {1, 2, 40, 256}) {
      std::vector<Ranked> got(rows.size() * static_cast<size_t>(k), Ranked{-7, 1.0f});
      cpu->topk_rows(x.data(), width, rows, k, got.data());
      for (size_t i = 0; i < rows.size(); ++i) {
        const std::vector<Ranked> want = reference(x.data() + rows[i] * width, width, k);
        for (int32_t j = 0; j < k; ++j) {
          const Ranked& g = got[i * static_cast<size_t>(k) + static_cast<size_t>(j)];
          ASSERT_TRUE(same(g, want[static_cast<size_t>(j)]))
              << "width " << width << " k " << k << " row " << rows[i] << " rank " << j << ": got ("
              << g.id << ", " << g.value << "), want (" << want[j].id << ", " << want[j].value
              << ")";
        }
      }
    }
  }
}

TEST(TopkRows, KOneIsArgmaxRows) {
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(12);
  const int64_t width = 1000, num_rows = 18;
  const std::vector<float> x = topk_testing::topk_test_rows(num_rows, width, rng);
  std::vector<int32_t> rows(num_rows), ids(num_rows);
  for (int32_t r = 0; r < num_rows; ++r) rows[r] = r;
  std::vector<Ranked> top(num_rows);
  cpu->topk_rows(x.data(), width, rows, 1, top.data());
  cpu->argmax_rows(x.data(), num_rows, width, ids.data());
  for (int32_t r = 0; r < num_rows; ++r) EXPECT_EQ(top[r].id, ids[r]) << "row " << r;
}

TEST(TopkRows, KAtOrOverTheWidthSortsTheWholeRowAndPads) {
  auto cpu = make_cpu_backend(1);
  const std::vector<float> row = {1.0f, kNaN, 3.0f, -0.0f, 3.0f, 0.0f, -kInf};
  const std::vector<int32_t> rows = {0};
  std::vector<Ranked> got(10);
  cpu->topk_rows(row.data(), static_cast<int64_t>(row.size()), rows, 10, got.data());
  const std::vector<int32_t> want_ids = {2, 4, 0, 3, 5, 6, 1, -1, -1, -1};
  for (size_t j = 0; j < got.size(); ++j) {
    EXPECT_EQ(got[j].id, want_ids[j]) << "rank " << j;
    if (want_ids[j] >= 0) {
      EXPECT_TRUE(same(got[j], {want_ids[j], row[static_cast<size_t>(want_ids[j])]}));
    } else {
      EXPECT_TRUE(std::isnan(got[j].value));
    }
  }
  // An empty row list writes nothing.
  Ranked untouched{-7, 2.0f};
  cpu->topk_rows(row.data(), 7, {}, 3, &untouched);
  EXPECT_EQ(untouched.id, -7);
}

TEST(TopkRows, RankKeyOrdersAsTheFloats) {
  const std::vector<float> values = {-kInf, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-40f, 2.0f, kInf};
  for (size_t i = 0; i < values.size(); ++i) {
    for (size_t j = 0; j < values.size(); ++j) {
      EXPECT_EQ(rank_key(values[i], 5) < rank_key(values[j], 5), values[i] < values[j])
          << values[i] << " vs " << values[j];
    }
    EXPECT_LT(rank_key(kNaN, 3), rank_key(values[i], 3));  // NaN elsewhere: last
    EXPECT_GT(rank_key(kNaN, 0), rank_key(values[i], 0));  // NaN at index 0: first
  }
}

}  // namespace
}  // namespace lightserve::kernels
