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
  KvManager manager(smol_layout(), 100, 4);
  std::optional<AdmitPlan> plan = manager.plan_admit(manager.layout().hybrid_footprint(), 40);
  ASSERT_TRUE(plan);
  EXPECT_EQ(manager.num_free_blocks(), 100);  // planning changed nothing
  EXPECT_EQ(manager.num_free_slots(), 4);
  KvAllocation kv = manager.commit(std::move(*plan));
  EXPECT_FALSE(kv.empty());
  EXPECT_EQ(kv.block_table().num_lane_groups(), 1);
  EXPECT_EQ(kv.block_table().num_blocks(), 3);
  EXPECT_EQ(kv.block_table().block(0, 2), 2);
  EXPECT_EQ(kv.slot_ids(), std::vector<SlotId>{0});
  EXPECT_EQ(kv.token_capacity(), 40);
  EXPECT_EQ(kv.layer_map().max_full_layers(), 15);
  EXPECT_EQ(kv.layer_map().max_lazy_layers(), 15);
  EXPECT_EQ(manager.num_free_blocks(), 97);
  EXPECT_EQ(manager.num_free_slots(), 3);
  EXPECT_DOUBLE_EQ(manager.usage().block_usage, 0.03);
  EXPECT_DOUBLE_EQ(manager.usage().slot_usage, 0.25);
  manager.check_invariants();
  manager.release(std::move(kv));
  EXPECT_TRUE(kv.empty());  // NOLINT(bugprone-use-after-move): released handles are empty
  EXPECT_EQ(manager.num_free_blocks(), 100);
  EXPECT_EQ(manager.num_free_slots(), 4);
  manager.check_invariants();
}

TEST(KvManagerTest, FullOverrideUsesTwoLaneGroupsAndNoSlot) {
  KvManager manager(smol_layout(), 100, 4);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().full_footprint(), 40));
  EXPECT_EQ(kv.block_table().num_lane_groups(), 2);
  EXPECT_EQ(kv.block_table().num_blocks_per_group(), 3);
  EXPECT_EQ(kv.block_table().group(0)[0], 0);
  EXPECT_EQ(kv.block_table().group(1)[0], 3);
  EXPECT_TRUE(kv.slot_ids().empty());
  EXPECT_EQ(manager.num_free_blocks(), 94);
  EXPECT_EQ(manager.num_free_slots(), 4);
  manager.check_invariants();
}

TEST(KvManagerTest, StreamingOverrideUsesSlotsOnly) {
  KvManager manager(smol_layout(), 100, 4);
  KvAllocation kv =
      manager.commit(*manager.plan_admit(manager.layout().streaming_footprint(), 5000));
  EXPECT_EQ(kv.block_table().num_blocks(), 0);
  EXPECT_EQ(kv.slot_ids().size(), 2u);
  EXPECT_EQ(manager.num_free_blocks(), 100);
  EXPECT_EQ(manager.num_free_slots(), 2);
  std::optional<GrowPlan> grow = manager.plan_grow(kv, 100000);
  ASSERT_TRUE(grow);  // a streaming request never needs more memory
  EXPECT_TRUE(grow->blocks.ids.empty());
  manager.commit(kv, std::move(*grow));
  manager.check_invariants();
}

TEST(KvManagerTest, ShortageOfBlocksOrSlotsIsNullopt) {
  KvManager manager(smol_layout(), 10, 1);
  const Footprint hybrid = manager.layout().hybrid_footprint();
  EXPECT_FALSE(manager.plan_admit(hybrid, 161));  // 11 blocks
  EXPECT_FALSE(manager.plan_admit(hybrid, int64_t{1} << 40));
  KvAllocation first = manager.commit(*manager.plan_admit(hybrid, 16));
  EXPECT_FALSE(manager.plan_admit(hybrid, 16));                             // no slot left
  EXPECT_TRUE(manager.plan_admit(manager.layout().full_footprint(), 64));   // 8 blocks, no slot
  EXPECT_FALSE(manager.plan_admit(manager.layout().full_footprint(), 80));  // 10 blocks
  EXPECT_TRUE(manager.fits_when_empty(hybrid, 160));
  EXPECT_FALSE(manager.fits_when_empty(hybrid, 161));
  EXPECT_FALSE(manager.fits_when_empty(manager.layout().streaming_footprint(), 1));  // 2 slots
  manager.check_invariants();
}

TEST(KvManagerTest, GrowAddsBlocksOnlyAcrossBlockBoundaries) {
  KvManager manager(smol_layout(), 100, 4);
  KvAllocation hybrid =
      manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 10));
  KvAllocation full = manager.commit(*manager.plan_admit(manager.layout().full_footprint(), 10));
  EXPECT_EQ(manager.num_free_blocks(), 97);

  std::optional<GrowPlan> within = manager.plan_grow(hybrid, 16);
  ASSERT_TRUE(within);
  EXPECT_TRUE(within->blocks.ids.empty());
  manager.commit(hybrid, std::move(*within));
  EXPECT_EQ(hybrid.token_capacity(), 16);

  std::optional<GrowPlan> across = manager.plan_grow(hybrid, 33);
  ASSERT_TRUE(across);
  EXPECT_EQ(across->blocks.ids.size(), 2u);
  EXPECT_EQ(manager.num_free_blocks(), 97);
  manager.commit(hybrid, std::move(*across));
  EXPECT_EQ(hybrid.block_table().num_blocks(), 3);

  manager.commit(full, *manager.plan_grow(full, 17));  // one more block in each lane group
  EXPECT_EQ(full.block_table().num_blocks_per_group(), 2);
  EXPECT_EQ(manager.num_free_blocks(), 93);
  EXPECT_FALSE(manager.plan_grow(full, 16 * 60));
  manager.check_invariants();
}

TEST(KvManagerTest, DestroyingAHandleReturnsItsMemory) {
  KvManager manager(smol_layout(), 100, 4);
  {
    KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 50));
    EXPECT_EQ(manager.num_live_allocations(), 1);
  }
  EXPECT_EQ(manager.num_live_allocations(), 0);
  EXPECT_EQ(manager.num_free_blocks(), 100);
  EXPECT_EQ(manager.num_free_slots(), 4);
  manager.check_invariants();
}

TEST(KvManagerTest, MovesTransferOwnership) {
  KvManager manager(smol_layout(), 100, 4);
  const Footprint hybrid = manager.layout().hybrid_footprint();
  KvAllocation a = manager.commit(*manager.plan_admit(hybrid, 16));
  KvAllocation b = manager.commit(*manager.plan_admit(hybrid, 32));
  const uint64_t b_id = b.id();
  KvAllocation moved(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(manager.num_free_blocks(), 97);
  moved = std::move(b);  // what `moved` held (a's block) goes back
  EXPECT_EQ(moved.id(), b_id);
  EXPECT_EQ(manager.num_free_blocks(), 98);
  EXPECT_EQ(manager.num_live_allocations(), 1);
  manager.check_invariants();
}

TEST(KvManagerTest, LayerMapIsEditedThroughTheHandle) {
  KvManager manager(smol_layout(), 100, 4);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  for (int32_t layer = 0; layer < 15; ++layer) kv.layer_map().assign_full(layer);
  for (int32_t layer = 15; layer < 30; ++layer) kv.layer_map().assign_lazy(layer);
  EXPECT_TRUE(kv.layer_map().complete());
  const LanePlace place = manager.layout().place_lazy_lane(kv.layer_map().lane_of(29));
  EXPECT_EQ(kv.slot_ids()[static_cast<size_t>(place.container)], 0);
  EXPECT_EQ(place.lane, 14);
  manager.check_invariants();
}

TEST(KvManagerTest, ArenaWithoutSlots) {
  KvManager manager(KvLayout::for_lazy_fraction(30, 0.0, 16, 4, 1020, 768).value(), 10, 0);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 32));
  EXPECT_TRUE(kv.slot_ids().empty());
  EXPECT_DOUBLE_EQ(manager.usage().slot_usage, 0.0);
  EXPECT_FALSE(manager.fits_when_empty(manager.layout().streaming_footprint(), 1));
  manager.check_invariants();
}

using KvManagerDeathTest = ::testing::Test;

TEST_F(KvManagerDeathTest, StalePlanAborts) {
  KvManager manager(smol_layout(), 100, 4);
  AdmitPlan stale = *manager.plan_admit(manager.layout().hybrid_footprint(), 16);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  EXPECT_DEATH((void)manager.commit(std::move(stale)), "stale block plan");
}

TEST_F(KvManagerDeathTest, ForeignHandleAborts) {
  KvManager first(smol_layout(), 100, 4);
  KvManager second(smol_layout(), 100, 4);
  KvAllocation kv = first.commit(*first.plan_admit(first.layout().hybrid_footprint(), 16));
  EXPECT_DEATH(second.release(std::move(kv)), "does not hold it");
  EXPECT_DEATH((void)second.plan_grow(kv, 32), "does not hold");
}

TEST_F(KvManagerDeathTest, ReleasingAnEmptyHandleAborts) {
  KvManager manager(smol_layout(), 100, 4);
  KvAllocation kv = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  manager.release(std::move(kv));
  EXPECT_DEATH(manager.release(std::move(kv)), "empty");
}

TEST_F(KvManagerDeathTest, GrowPlanForAnotherAllocationAborts) {
  KvManager manager(smol_layout(), 100, 4);
  KvAllocation a = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  KvAllocation b = manager.commit(*manager.plan_admit(manager.layout().hybrid_footprint(), 16));
  GrowPlan plan = *manager.plan_grow(a, 32);
  EXPECT_DEATH(manager.commit(b, std::move(plan)), "committed to allocation");
  EXPECT_DEATH((void)manager.plan_grow(a, 8), "cannot shrink");
}

TEST_F(KvManagerDeathTest, UnsupportedFootprintAborts) {
  KvManager manager(smol_layout(), 100, 4);
  EXPECT_DEATH((void)manager.plan_admit({10, 10}, 16), "does not cover");
}

TEST_F(KvManagerDeathTest, HandleOutlivingItsManagerAborts) {
  EXPECT_DEATH(
      {
        auto manager = std::make_unique<KvManager>(smol_layout(), 100, 4);
        KvAllocation kv =
            manager->commit(*manager->plan_admit(manager->layout().hybrid_footprint(), 16));
        manager.reset();
      },
      "outlive their KvManager");
}

}  // namespace
}  // namespace lightserve::memory
