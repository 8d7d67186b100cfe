#include "scheduler/capacity_scheduler.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/scheduler/engine_harness.h"

namespace lightserve::scheduler {
namespace {

using testing::small_layout;

// small_layout: blocks of 4 tokens, one lane group and one slot per hybrid request.
CapacityCandidate waiting(RequestId id, int64_t tokens, int64_t max_total) {
  return {id, small_layout().hybrid_footprint(), tokens, 0, max_total};
}
CapacityCandidate running(RequestId id, int64_t needed, int64_t capacity, int64_t max_total) {
  return {id, small_layout().hybrid_footprint(), needed, capacity, max_total};
}
std::vector<RequestId> admitted(const CapacityDecision& d) {
  std::vector<RequestId> ids;
  for (const auto& a : d.admit) ids.push_back(a.id);
  return ids;
}

TEST(CapacitySchedulerTest, ReserveAdmitsPromptPlusMaxTokensInOrder) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kReserve, 8, 4);
  // 10 + 6 = 16 tokens = 4 blocks; then 24 tokens = 6 blocks do not fit in the 5 left.
  const std::vector<CapacityCandidate> w = {waiting(1, 10, 16), waiting(2, 20, 24),
                                            waiting(3, 1, 2)};
  const CapacityDecision d = s.schedule({{}, w, 9, 8});
  EXPECT_EQ(admitted(d), (std::vector<RequestId>{1}))
      << "request 3 would fit but must not overtake the blocked request 2 (FCFS)";
  EXPECT_EQ(d.admit[0].token_capacity, 16);
  EXPECT_EQ(d.num_free_blocks, 5);
  EXPECT_EQ(d.num_free_slots, 7);
  EXPECT_TRUE(d.preempt.empty());
}

TEST(CapacitySchedulerTest, SlotsAndMaxRunningLimitAdmission) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kReserve, 2, 4);
  const std::vector<CapacityCandidate> w = {waiting(1, 2, 4), waiting(2, 2, 4), waiting(3, 2, 4)};
  EXPECT_EQ(admitted(s.schedule({{}, w, 100, 1})), (std::vector<RequestId>{1})) << "one slot";
  const std::vector<CapacityCandidate> r = {running(9, 3, 4, 4)};
  EXPECT_EQ(admitted(s.schedule({r, w, 100, 10})), (std::vector<RequestId>{1}))
      << "max_running 2 with one running";
}

TEST(CapacitySchedulerTest, OptimisticAdmitsWithGrowthAndGrowsRunning) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 4);
  const std::vector<CapacityCandidate> r = {running(1, 9, 8, 30)};  // needs a 3rd block
  const std::vector<CapacityCandidate> w = {waiting(2, 5, 30)};
  const CapacityDecision d = s.schedule({r, w, 10, 4});
  ASSERT_EQ(d.grow.size(), 1u);
  EXPECT_EQ(d.grow[0].token_capacity, 13);  // 9 + growth 4 -> 4 blocks (2 more)
  ASSERT_EQ(d.admit.size(), 1u);
  EXPECT_EQ(d.admit[0].token_capacity, 9);  // 5 + 4 -> 3 blocks
  EXPECT_EQ(d.num_free_blocks, 10 - 2 - 3);
}

TEST(CapacitySchedulerTest, OptimisticPreemptsYoungestFirstAndAdmitsNothing) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 4);
  // Oldest needs 2 more blocks; none free. Youngest (3) holds 1 block, 2 holds 2 blocks.
  const std::vector<CapacityCandidate> r = {running(1, 9, 8, 40), running(2, 5, 8, 40),
                                            running(3, 3, 4, 40)};
  const std::vector<CapacityCandidate> w = {waiting(4, 1, 2)};
  const CapacityDecision d = s.schedule({r, w, 0, 0});
  EXPECT_EQ(d.preempt, (std::vector<RequestId>{3, 2}));
  ASSERT_EQ(d.grow.size(), 1u);
  EXPECT_EQ(d.grow[0].id, 1u);
  EXPECT_TRUE(d.admit.empty()) << "a step that preempted admits nothing";
  EXPECT_EQ(d.num_free_blocks, 1);
  EXPECT_EQ(d.num_free_slots, 2);
}

TEST(CapacitySchedulerTest, YoungestPreemptsItself) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 4);
  const std::vector<CapacityCandidate> r = {running(1, 4, 4, 40), running(2, 5, 4, 40)};
  const CapacityDecision d = s.schedule({r, {}, 0, 0});
  EXPECT_EQ(d.preempt, (std::vector<RequestId>{2})) << "the older one keeps its KV";
  EXPECT_TRUE(d.grow.empty());
  EXPECT_EQ(d.num_free_blocks, 1);
}

TEST(CapacitySchedulerTest, GrowthIsCappedAtPromptPlusMaxTokens) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 100);
  const CapacityDecision d = s.schedule({{}, std::vector{waiting(1, 5, 7)}, 10, 1});
  ASSERT_EQ(d.admit.size(), 1u);
  EXPECT_EQ(d.admit[0].token_capacity, 7);
}

}  // namespace
}  // namespace lightserve::scheduler
