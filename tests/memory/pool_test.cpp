// memory::IdPool, as KvManager uses it for its pages.
#include <gtest/gtest.h>

#include <vector>

#include "memory/id_pool.h"

namespace lightserve::memory {
namespace {

using Ids = std::vector<int32_t>;

TEST(IdPoolTest, PlanHasNoSideEffects) {
  IdPool pool(8, "block");
  std::optional<IdPlan> first = pool.plan(3);
  std::optional<IdPlan> second = pool.plan(3);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->ids, second->ids);
  EXPECT_EQ(pool.num_free(), 8);
  EXPECT_EQ(pool.num_total(), 8);
  pool.check_invariants();
}

TEST(IdPoolTest, CommitTakesExactlyThePlannedIds) {
  IdPool pool(8, "block");
  std::optional<IdPlan> plan = pool.plan(3);
  ASSERT_TRUE(plan);
  const Ids planned = plan->ids;
  EXPECT_EQ(planned, (Ids{0, 1, 2}));
  EXPECT_EQ(pool.commit(std::move(*plan)), planned);
  EXPECT_EQ(pool.num_free(), 5);
  for (int32_t id : planned) EXPECT_FALSE(pool.is_free(id));
  EXPECT_TRUE(pool.is_free(3));
  pool.check_invariants();
}

TEST(IdPoolTest, ShortageIsNullopt) {
  IdPool pool(4, "block");
  EXPECT_FALSE(pool.plan(5));
  std::vector<PageId> taken = pool.commit(*pool.plan(4));
  EXPECT_FALSE(pool.plan(1));
  std::optional<IdPlan> none = pool.plan(0);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->ids.empty());
  pool.release(taken);
  EXPECT_EQ(pool.num_free(), 4);
}

TEST(IdPoolTest, ReleasedIdsAreHandedOutFirstInTheirOrder) {
  IdPool pool(8, "block");
  std::vector<PageId> taken = pool.commit(*pool.plan(6));
  pool.release(std::vector<PageId>{4, 2});
  EXPECT_EQ(pool.plan(3)->ids, (Ids{4, 2, 6}));
  pool.check_invariants();
}

TEST(IdPoolTest, EmptyPool) {
  IdPool pool(0, "block");
  EXPECT_EQ(pool.num_total(), 0);
  EXPECT_TRUE(pool.plan(0));
  EXPECT_FALSE(pool.plan(1));
}

TEST(IdPoolTest, PlanCommitRelease) {
  IdPool pool(3, "slot");
  std::optional<IdPlan> plan = pool.plan(2);
  ASSERT_TRUE(plan);
  EXPECT_EQ(pool.num_free(), 3);
  std::vector<PageId> slots = pool.commit(std::move(*plan));
  EXPECT_EQ(slots, (Ids{0, 1}));
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_FALSE(pool.plan(2));
  pool.release(slots);
  EXPECT_EQ(pool.num_free(), 3);
  pool.check_invariants();
}

using IdPoolDeathTest = ::testing::Test;

TEST_F(IdPoolDeathTest, DoubleReleaseAborts) {
  IdPool pool(4, "block");
  std::vector<PageId> taken = pool.commit(*pool.plan(2));
  pool.release(taken);
  EXPECT_DEATH(pool.release(taken), "block [01] released twice");
}

TEST_F(IdPoolDeathTest, ForeignIdAborts) {
  IdPool pool(4, "block");
  EXPECT_DEATH(pool.release(std::vector<PageId>{7}), "block 7 is not in \\[0, 4\\)");
}

TEST_F(IdPoolDeathTest, StalePlanAborts) {
  IdPool pool(4, "block");
  IdPlan stale = *pool.plan(1);
  std::vector<PageId> taken = pool.commit(*pool.plan(1));
  EXPECT_DEATH((void)pool.commit(stale), "stale block plan");
}

TEST_F(IdPoolDeathTest, AlteredPlanAborts) {
  IdPool pool(4, "block");
  IdPlan plan = *pool.plan(1);
  plan.ids[0] = 3;
  EXPECT_DEATH((void)pool.commit(plan), "altered block plan");
}

TEST_F(IdPoolDeathTest, MessagesNameThePoolsKind) {
  IdPool pool(2, "slot");
  std::vector<PageId> taken = pool.commit(*pool.plan(1));
  pool.release(taken);
  EXPECT_DEATH(pool.release(taken), "slot 0 released twice");
}

}  // namespace
}  // namespace lightserve::memory
