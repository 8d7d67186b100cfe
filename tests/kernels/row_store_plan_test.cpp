// The host half of the CUDA backend's rope + K/V store fusion (kernels/cuda/row_store_plan.h):
// which queued stores may run inside the rope's kernel, and the grouping by rope row that the
// kernel walks. Pure address arithmetic, so it runs here (the kernel itself: cuda_fusion_test).
#include "kernels/cuda/row_store_plan.h"

#include <gtest/gtest.h>

#include <vector>

namespace lightserve::kernels::cuda {
namespace {

// The decode's fused q+k+v rows of the default model: 9 query heads, then 3 K and 3 V heads of 64.
constexpr int64_t kQDim = 576, kKvWidth = 192, kStride = kQDim + 2 * kKvWidth;

struct Fixture {
  std::vector<float> qkv = std::vector<float>(static_cast<size_t>(4 * kStride));
  std::vector<uint16_t> k_cache = std::vector<uint16_t>(static_cast<size_t>(16 * kKvWidth));
  std::vector<uint16_t> v_cache = std::vector<uint16_t>(static_cast<size_t>(16 * kKvWidth));
  const float* k(int64_t row) const { return qkv.data() + row * kStride + kQDim; }
  const float* v(int64_t row) const { return k(row) + kKvWidth; }
  uint16_t* k_slot(int64_t slot) { return k_cache.data() + slot * kKvWidth; }
  uint16_t* v_slot(int64_t slot) { return v_cache.data() + slot * kKvWidth; }
};

QueuedStore store(const float* src, uint16_t* dst, int64_t rows = 1, int32_t bf16 = 0) {
  return QueuedStore{src, kStride, dst, kKvWidth, rows, bf16};
}

TEST(RowStorePlan, GroupsADecodesStoresByRopeRowInIssueOrder) {
  Fixture f;
  // Sequences in the order the model stores them: row 2 first (K then V), then a two-row store
  // of rows 0 and 1 (a chunk), then row 3 in bf16.
  const std::vector<QueuedStore> queued = {
      store(f.k(2), f.k_slot(9)),       store(f.v(2), f.v_slot(9)),
      store(f.k(0), f.k_slot(4), 2),    store(f.v(0), f.v_slot(4), 2),
      store(f.k(3), f.k_slot(0), 1, 1), store(f.v(3), f.v_slot(0), 1, 1),
  };
  RowStorePlan plan;
  ASSERT_TRUE(plan_row_stores(f.qkv.data(), 4, kStride, queued, kKvWidth, plan));
  EXPECT_EQ(plan.row_begin, (std::vector<int32_t>{0, 2, 4, 6, 8}));
  ASSERT_EQ(plan.stores.size(), 8u);
  // Row 0: K then V of the two-row store's first row; row 1: their second rows (dst one row on).
  EXPECT_EQ(plan.stores[0].dst, f.k_slot(4));
  EXPECT_EQ(plan.stores[0].col, kQDim);
  EXPECT_EQ(plan.stores[1].dst, f.v_slot(4));
  EXPECT_EQ(plan.stores[1].col, kQDim + kKvWidth);
  EXPECT_EQ(plan.stores[2].dst, f.k_slot(5));
  EXPECT_EQ(plan.stores[3].dst, f.v_slot(5));
  EXPECT_EQ(plan.stores[4].dst, f.k_slot(9));
  EXPECT_EQ(plan.stores[5].dst, f.v_slot(9));
  EXPECT_EQ(plan.stores[6].dst, f.k_slot(0));
  EXPECT_EQ(plan.stores[6].bf16, 1);
  EXPECT_EQ(plan.stores[7].col, kQDim + kKvWidth);
  // A row with no store gets an empty range.
  const std::vector<QueuedStore> only_row_3 = {store(f.k(3), f.k_slot(1))};
  ASSERT_TRUE(plan_row_stores(f.qkv.data(), 4, kStride, only_row_3, kKvWidth, plan));
  EXPECT_EQ(plan.row_begin, (std::vector<int32_t>{0, 0, 0, 0, 1}));
}

TEST(RowStorePlan, RefusesWhatTheFusedKernelCannotDo) {
  Fixture f;
  RowStorePlan plan;
  std::vector<float> elsewhere(static_cast<size_t>(kStride));
  auto refuses = [&](std::vector<QueuedStore> queued, int64_t rope_rows = 4,
                     int64_t width = kKvWidth) {
    return !plan_row_stores(f.qkv.data(), rope_rows, kStride, queued, width, plan);
  };
  // A source outside the rope's rows (another buffer, or a row past the rope's n).
  EXPECT_TRUE(refuses({store(f.k(0), f.k_slot(0)), store(elsewhere.data(), f.k_slot(1))}));
  EXPECT_TRUE(refuses({store(f.k(3), f.k_slot(0))}, /*rope_rows=*/3));
  // A two-row store whose second row is past the rope's rows.
  EXPECT_TRUE(refuses({store(f.k(1), f.k_slot(0), 2)}, /*rope_rows=*/2));
  // A source row running past the end of its rope row (V plus one more value).
  EXPECT_TRUE(refuses({store(f.v(0), f.v_slot(0))}, 4, kKvWidth + 1));
  // A destination inside the rope's rows.
  auto* inside = reinterpret_cast<uint16_t*>(const_cast<float*>(f.k(1)));
  EXPECT_TRUE(refuses({store(f.k(0), inside)}));
  // No rows, no stride, no width.
  EXPECT_TRUE(refuses({store(f.k(0), f.k_slot(0))}, 0));
  EXPECT_FALSE(plan_row_stores(f.qkv.data(), 4, 0, std::vector<QueuedStore>{}, kKvWidth, plan));
  // And the same stores inside the rope's rows are taken.
  EXPECT_FALSE(refuses({store(f.k(0), f.k_slot(0)), store(f.v(3), f.v_slot(3))}));
}

}  // namespace
}  // namespace lightserve::kernels::cuda
