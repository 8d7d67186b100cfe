// BlockPool and SlotPool share IdFreeList; both are exercised so a divergence would show.
#include <gtest/gtest.h>

#include <vector>

#include "memory/block_pool.h"
#include "memory/slot_pool.h"

namespace lightserve::memory {
namespace {

using Ids = std::vector<int32_t>;

TEST(BlockPoolTest, PlanHasNoSideEffects) {
  BlockPool pool(8);
  std::optional<BlockPlan> first = pool.plan(3);
  std::optional<BlockPlan> second = pool.plan(3);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->block_ids, second->block_ids);
  EXPECT_EQ(pool.num_free(), 8);
  EXPECT_EQ(pool.num_total(), 8);
  pool.check_invariants();
}

TEST(BlockPoolTest, CommitTakesExactlyThePlannedIds) {
  BlockPool pool(8);
  std::optional<BlockPlan> plan = pool.plan(3);
  ASSERT_TRUE(plan);
  const Ids planned = plan->block_ids;
  EXPECT_EQ(planned, (Ids{0, 1, 2}));
  EXPECT_EQ(pool.commit(std::move(*plan)), planned);
  EXPECT_EQ(pool.num_free(), 5);
  for (int32_t id : planned) EXPECT_FALSE(pool.is_free(id));
  EXPECT_TRUE(pool.is_free(3));
  pool.check_invariants();
}

TEST(BlockPoolTest, ShortageIsNullopt) {
  BlockPool pool(4);
  EXPECT_FALSE(pool.plan(5));
  std::vector<BlockId> taken = pool.commit(*pool.plan(4));
  EXPECT_FALSE(pool.plan(1));
  std::optional<BlockPlan> none = pool.plan(0);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->block_ids.empty());
  pool.release(taken);
  EXPECT_EQ(pool.num_free(), 4);
}

TEST(BlockPoolTest, ReleasedIdsAreHandedOutFirstInTheirOrder) {
  BlockPool pool(8);
  std::vector<BlockId> taken = pool.commit(*pool.plan(6));
  pool.release(std::vector<BlockId>{4, 2});
  EXPECT_EQ(pool.plan(3)->block_ids, (Ids{4, 2, 6}));
  pool.check_invariants();
}

TEST(BlockPoolTest, EmptyPool) {
  BlockPool pool(0);
  EXPECT_EQ(pool.num_total(), 0);
  EXPECT_TRUE(pool.plan(0));
  EXPECT_FALSE(pool.plan(1));
}

TEST(SlotPoolTest, PlanCommitRelease) {
  SlotPool pool(3);
  std::optional<SlotPlan> plan = pool.plan(2);
  ASSERT_TRUE(plan);
  EXPECT_EQ(pool.num_free(), 3);
  std::vector<SlotId> slots = pool.commit(std::move(*plan));
  EXPECT_EQ(slots, (Ids{0, 1}));
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_FALSE(pool.plan(2));
  pool.release(slots);
  EXPECT_EQ(pool.num_free(), 3);
  pool.check_invariants();
}

using BlockPoolDeathTest = ::testing::Test;

TEST_F(BlockPoolDeathTest, DoubleReleaseAborts) {
  BlockPool pool(4);
  std::vector<BlockId> taken = pool.commit(*pool.plan(2));
  pool.release(taken);
  EXPECT_DEATH(pool.release(taken), "block [01] released twice");
}

TEST_F(BlockPoolDeathTest, ForeignIdAborts) {
  BlockPool pool(4);
  EXPECT_DEATH(pool.release(std::vector<BlockId>{7}), "block 7 is not in \\[0, 4\\)");
}

TEST_F(BlockPoolDeathTest, StalePlanAborts) {
  BlockPool pool(4);
  BlockPlan stale = *pool.plan(1);
  std::vector<BlockId> taken = pool.commit(*pool.plan(1));
  EXPECT_DEATH((void)pool.commit(stale), "stale block plan");
}

TEST_F(BlockPoolDeathTest, AlteredPlanAborts) {
  BlockPool pool(4);
  BlockPlan plan = *pool.plan(1);
  plan.block_ids[0] = 3;
  EXPECT_DEATH((void)pool.commit(plan), "altered block plan");
}

TEST_F(BlockPoolDeathTest, SlotDoubleReleaseAborts) {
  SlotPool pool(2);
  std::vector<SlotId> taken = pool.commit(*pool.plan(1));
  pool.release(taken);
  EXPECT_DEATH(pool.release(taken), "slot 0 released twice");
}

}  // namespace
}  // namespace lightserve::memory
