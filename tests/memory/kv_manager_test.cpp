#include "memory/kv_manager.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace lightserve::memory {
namespace {

// L = 30 at f = 0.5 (15 + 15 lanes), block_size 16, sink 4 + window 1020.
KvLayout smol_layout() {
  return KvLayout::for_lazy_fraction(30, 0.5, 16, 4, 1020, 768).value();
}

TEST(KvManagerTest, HybridAdmission) {
  KvManager manager(smol_layout(), 1000);
  std::optional<AdmitPlan> plan = manager.plan_admit(manager.layout().hybrid_footprint(), 40);
  ASSERT_TRUE(plan);
  EXPECT_EQ(manager.num_free_pages(), 1000);  // planning changed nothing
  KvAllocation kv = manager.commit(std::move(*plan));
  EXPECT_FALSE(kv.empty());
  // 40 tokens: 3 pages per lane, full or lazy (below sink + window a lazy lane is a full one).
  EXPECT_EQ(kv.full_pages().num_lanes(), 15);
  EXPECT_EQ(kv.lazy_pages().num_lanes(), 15);
  EXPECT_EQ(kv.full_pages().num_pages_per_lane(), 3);
  EXPECT_EQ(kv.lazy_pages().num_pages_per_lane(), 3);
  EXPECT_EQ(kv.full_pages().page(0, 2), 2);
  EXPECT_EQ(kv.lazy_pages().page(0, 0), 45);  // the full lanes' pages come first
  EXPECT_EQ(kv.num_pages(), 90);
  EXPECT_EQ(kv.token_capacity(), 40);
  EXPECT_EQ(kv.layer_map().max_full_layers(), 15);
  EXPECT_EQ(kv.layer_map().max_lazy_layers(), 15);
  EXPECT_EQ(manager.num_free_pages(), 910);
  EXPECT_DOUBLE_EQ(manager.usage().used, 0.09);
  EXPECT_DOUBLE_EQ(manager.usage().full, 0.045);
  EXPECT_DOUBLE_EQ(manager.usage().lazy, 0.045);
  manager.check_invariants();
  manager.release(std::move(kv));
  EXPECT_TRUE(kv.empty());  // NOLINT(bugprone-use-after-move): released handles are empty
  EXPECT_EQ(manager.num_free_pages(), 1000);
  EXPECT_DOUBLE_EQ(manager.usage().used, 0.0);
  manager.check_invariants();
}

TEST(KvManagerTest, ShortHybridCostsWhatFullAttentionCosts) {
  KvManager manager(smol_layout(), 1000);
  KvAllocation hybrid =
      manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 32));
  KvAllocation full = manager.commit(*manager.plan_admit(manager.layout().full_footprint(), 32));
  EXPECT_EQ(hybrid.num_pages(), full.num_pages());
  EXPECT_EQ(full.full_pages().num_lanes(), 30);
  EXPECT_EQ(full.lazy_pages().num_lanes(), 0);
  manager.check_invariants();
}

TEST(KvManagerTest, LongHybridKeepsItsLazyLanesAtSinkPlusWindow) {
  KvManager manager(smol_layout(), 10000);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 4096));
  EXPECT_EQ(kv.full_pages().num_pages_per_lane(), 256);
  EXPECT_EQ(kv.lazy_pages().num_pages_per_lane(), 64);
  std::optional<GrowPlan> grow = manager.plan_grow(kv, 4096 + 16);
  ASSERT_TRUE(grow);
  EXPECT_EQ(grow->pages.ids.size(), 15u);  // one page per full lane, none for the lazy ones
  manager.commit(kv, std::move(*grow));
  EXPECT_EQ(kv.lazy_pages().num_pages_per_lane(), 64);
  manager.check_invariants();
}

TEST(KvManagerTest, StreamingOverrideStopsGrowingAtTheRing) {
  KvManager manager(smol_layout(), 10000);
  KvAllocation kv =
      manager.commit(*manager.plan_admit(manager.layout().streaming_footprint(), 5000));
  EXPECT_EQ(kv.full_pages().num_pages(), 0);
  EXPECT_EQ(kv.lazy_pages().num_pages(), 30 * 64);
  std::optional<GrowPlan> grow = manager.plan_grow(kv, 100000);
  ASSERT_TRUE(grow);  // a streaming request never needs more memory
  EXPECT_TRUE(grow->pages.ids.empty());
  manager.commit(kv, std::move(*grow));
  EXPECT_DOUBLE_EQ(manager.usage().full, 0.0);
  manager.check_invariants();
}

TEST(KvManagerTest, ShortageOfPagesIsNullopt) {
  KvManager manager(smol_layout(), 100);
  const Footprint hybrid = manager.layout().hybrid_footprint();
  EXPECT_FALSE(manager.plan_admit(hybrid, 65));  // 5 pages x 30 lanes
  EXPECT_FALSE(manager.plan_admit(hybrid, int64_t{1} << 40));
  KvAllocation first = manager.commit(*manager.plan_admit(hybrid, 48));            // 90 pages
  EXPECT_FALSE(manager.plan_admit(hybrid, 1));                                     // 30 pages
  EXPECT_FALSE(manager.plan_admit(manager.layout().streaming_footprint(), 1000));  // 30 x 63
  EXPECT_TRUE(manager.fits_when_empty(hybrid, 48));
  EXPECT_FALSE(manager.fits_when_empty(hybrid, 49));
  EXPECT_FALSE(manager.fits_when_empty(manager.layout().streaming_footprint(), 5000));
  manager.check_invariants();
}

TEST(KvManagerTest, GrowAddsPagesOnlyAcrossPageBoundaries) {
  KvManager manager(smol_layout(), 1000);
  KvAllocation hybrid =
      manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 10));
  KvAllocation full = manager.commit(*manager.plan_admit(manager.layout().full_footprint(), 10));
  EXPECT_EQ(manager.num_free_pages(), 940);

  std::optional<GrowPlan> within = manager.plan_grow(hybrid, 16);
  ASSERT_TRUE(within);
  EXPECT_TRUE(within->pages.ids.empty());
  manager.commit(hybrid, std::move(*within));
  EXPECT_EQ(hybrid.token_capacity(), 16);

  std::optional<GrowPlan> across = manager.plan_grow(hybrid, 33);
  ASSERT_TRUE(across);
  EXPECT_EQ(across->pages.ids.size(), 60u);  // 2 more pages in each of the 30 lanes
  EXPECT_EQ(manager.num_free_pages(), 940);
  manager.commit(hybrid, std::move(*across));
  EXPECT_EQ(hybrid.full_pages().num_pages_per_lane(), 3);
  EXPECT_EQ(hybrid.lazy_pages().num_pages_per_lane(), 3);

  manager.commit(full, *manager.plan_grow(full, 17));  // one more page in each lane
  EXPECT_EQ(full.full_pages().num_pages_per_lane(), 2);
  EXPECT_EQ(manager.num_free_pages(), 850);
  EXPECT_FALSE(manager.plan_grow(full, 16 * 60));
  manager.check_invariants();
}

TEST(KvManagerTest, DestroyingAHandleReturnsItsMemory) {
  KvManager manager(smol_layout(), 1000);
  {
    KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 50));
    EXPECT_EQ(manager.num_live_allocations(), 1);
  }
  EXPECT_EQ(manager.num_live_allocations(), 0);
  EXPECT_EQ(manager.num_free_pages(), 1000);
  manager.check_invariants();
}

TEST(KvManagerTest, MovesTransferOwnership) {
  KvManager manager(smol_layout(), 1000);
  const Footprint hybrid = manager.layout().hybrid_footprint();
  KvAllocation a = manager.commit(*manager.plan_admit(hybrid, 16));
  KvAllocation b = manager.commit(*manager.plan_admit(hybrid, 32));
  const uint64_t b_id = b.id();
  KvAllocation moved(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(manager.num_free_pages(), 910);
  moved = std::move(b);  // what `moved` held (a's pages) goes back
  EXPECT_EQ(moved.id(), b_id);
  EXPECT_EQ(manager.num_free_pages(), 940);
  EXPECT_EQ(manager.num_live_allocations(), 1);
  manager.check_invariants();
}

TEST(KvManagerTest, LayerMapIsEditedThroughTheHandle) {
  KvManager manager(smol_layout(), 1000);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  for (int32_t layer = 0; layer < 15; ++layer) kv.layer_map().assign_full(layer);
  for (int32_t layer = 15; layer < 30; ++layer) kv.layer_map().assign_lazy(layer);
  EXPECT_TRUE(kv.layer_map().complete());
  const int32_t lane = kv.layer_map().lane_of(29);
  EXPECT_EQ(kv.lazy_row(manager.layout(), lane, 3), kv.lazy_pages().page(lane, 0) * 16 + 3);
  manager.check_invariants();
}

TEST(KvManagerTest, ArenaForFullAttention) {
  KvManager manager(KvLayout::for_lazy_fraction(30, 0.0, 16, 4, 1020, 768).value(), 100);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 32));
  EXPECT_EQ(kv.lazy_pages().num_lanes(), 0);
  EXPECT_DOUBLE_EQ(manager.usage().lazy, 0.0);
  EXPECT_DOUBLE_EQ(manager.usage().full, 0.6);
  manager.check_invariants();
}

using KvManagerDeathTest = ::testing::Test;

TEST_F(KvManagerDeathTest, StalePlanAborts) {
  KvManager manager(smol_layout(), 1000);
  AdmitPlan stale = *manager.plan_admit(manager.layout().hybrid_footprint(), 16);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  EXPECT_DEATH((void)manager.commit(std::move(stale)), "stale page plan");
}

TEST_F(KvManagerDeathTest, ForeignHandleAborts) {
  KvManager first(smol_layout(), 1000);
  KvManager second(smol_layout(), 1000);
  KvAllocation kv = first.commit(*first.plan_admit(first.layout().hybrid_footprint(), 16));
  EXPECT_DEATH(second.release(std::move(kv)), "does not hold it");
  EXPECT_DEATH((void)second.plan_grow(kv, 32), "does not hold");
}

TEST_F(KvManagerDeathTest, ReleasingAnEmptyHandleAborts) {
  KvManager manager(smol_layout(), 1000);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  manager.release(std::move(kv));
  EXPECT_DEATH(manager.release(std::move(kv)), "empty");
}

TEST_F(KvManagerDeathTest, GrowPlanForAnotherAllocationAborts) {
  KvManager manager(smol_layout(), 1000);
  KvAllocation a = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  KvAllocation b = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  GrowPlan plan = *manager.plan_grow(a, 32);
  EXPECT_DEATH(manager.commit(b, std::move(plan)), "committed to allocation");
  EXPECT_DEATH((void)manager.plan_grow(a, 8), "cannot shrink");
}

TEST_F(KvManagerDeathTest, UnsupportedFootprintAborts) {
  KvManager manager(smol_layout(), 1000);
  EXPECT_DEATH((void)manager.plan_admit({10, 10}, 16), "does not cover");
}

TEST_F(KvManagerDeathTest, HandleOutlivingItsManagerAborts) {
  EXPECT_DEATH(
      {
        auto manager = std::make_unique<KvManager>(smol_layout(), 1000);
        KvAllocation kv =
            manager->commit(*manager->plan_admit(manager->layout().hybrid_footprint(), 16));
        manager.reset();
      },
      "outlive their KvManager");
}

}  // namespace
}  // namespace lightserve::memory
