#include "scheduler/step_composer.h"

#include <gtest/gtest.h>

#include <vector>

namespace lightserve::scheduler {
namespace {

ComposerRequest decode(RequestId id) {
  return {id, true, 0, 0};
}
ComposerRequest prefill(RequestId id, int32_t tokens, int32_t done) {
  return {id, false, tokens, done};
}

TEST(StepComposerTest, DecodesFirstThenPrefillLayersWithinBudget) {
  const StepComposer c(/*num_layers=*/4, /*budget=*/40);
  // Seniority order: the prefill is older than the decodes, yet decodes go first.
  const std::vector<ComposerRequest> running = {prefill(1, 10, 0), decode(2), decode(3)};
  const StepPlan plan = c.compose(running);
  ASSERT_EQ(plan.work.size(), 3u);
  EXPECT_TRUE(plan.work[0].decode);
  EXPECT_EQ(plan.work[0].id, 2u);
  EXPECT_EQ(plan.work[1].id, 3u);
  EXPECT_EQ(plan.work[2].id, 1u);
  EXPECT_EQ(plan.work[2].layer_begin, 0);
  EXPECT_EQ(plan.work[2].layer_end, 3);  // (40 - 8) / 10 = 3 layers
  EXPECT_EQ(plan.token_layers, 8 + 30);
  EXPECT_EQ(plan.num_decodes, 2);
  EXPECT_EQ(plan.num_prefills, 1);
}

TEST(StepComposerTest, LongPromptAdvancesByLayersOverSteps) {
  const StepComposer c(4, 20);
  int32_t done = 0;
  std::vector<int32_t> ends;
  while (done < 4) {
    const StepPlan plan = c.compose(std::vector{decode(1), prefill(2, 8, done)});
    ASSERT_LE(plan.token_layers, 20);
    ASSERT_EQ(plan.work.size(), 2u) << "the decode is never stalled";
    done = plan.work[1].layer_end;
    ends.push_back(done);
  }
  EXPECT_EQ(ends, (std::vector<int32_t>{2, 4}));  // (20 - 4) / 8 = 2 layers a step
}

TEST(StepComposerTest, YoungerShortPrefillUsesRoomTheOlderCannot) {
  const StepComposer c(4, 20);
  const StepPlan plan = c.compose(std::vector{prefill(1, 15, 3), prefill(2, 3, 0)});
  ASSERT_EQ(plan.work.size(), 2u);
  EXPECT_EQ(plan.work[0].layer_end, 4);  // 15 token-layers
  EXPECT_EQ(plan.work[1].layer_end, 1);  // 5 left: one layer of 3 tokens
  EXPECT_EQ(plan.token_layers, 18);
}

TEST(StepComposerTest, PrefillThatCannotAffordALayerWaits) {
  const StepComposer c(4, 20);
  const StepPlan plan = c.compose(std::vector{decode(1), decode(2), prefill(3, 13, 0)});
  EXPECT_EQ(plan.num_prefills, 0);
  EXPECT_EQ(plan.token_layers, 8);
}

// A held decode (its reader lags) costs nothing and is counted; the others go on.
TEST(StepComposerTest, HeldDecodesSitTheStepOut) {
  const StepComposer c(4, 20);
  ComposerRequest held = decode(2);
  held.held = true;
  const StepPlan plan = c.compose(std::vector{decode(1), held, decode(3), prefill(4, 3, 0)});
  ASSERT_EQ(plan.work.size(), 3u);
  EXPECT_EQ(plan.work[0].id, 1u);
  EXPECT_EQ(plan.work[1].id, 3u);
  EXPECT_EQ(plan.num_decodes, 2);
  EXPECT_EQ(plan.num_held, 1);
  // 20 - 2 decodes · 4 = 12 left: the 3-token prompt takes all 4 layers.
  EXPECT_EQ(plan.work[2].layer_end, 4);
  EXPECT_EQ(plan.token_layers, 20);
}

// A held prefill (a preempted request recomputing while its reader still lags: its last layer
// would emit a token) sits the step out too; the room goes to the next prefill.
TEST(StepComposerTest, HeldRecomputePrefillSitsTheStepOut) {
  const StepComposer c(4, 20);
  ComposerRequest held = prefill(5, 3, 0);
  held.held = true;
  const StepPlan plan = c.compose(std::vector{held, prefill(6, 3, 0)});
  ASSERT_EQ(plan.work.size(), 1u);
  EXPECT_EQ(plan.work[0].id, 6u);
  EXPECT_EQ(plan.num_held, 1);
  EXPECT_EQ(plan.num_prefills, 1);
  EXPECT_EQ(plan.token_layers, 12);
}

TEST(StepComposerTest, WholePrefillsOnlyWithoutLayeredPrefill) {
  const StepComposer c(4, 40, /*layered_prefill=*/false);
  // 8 · 4 = 32 fits whole; then 8 left: the 3-token prompt would get 2 layers, so it waits.
  const StepPlan plan = c.compose(std::vector{prefill(1, 8, 0), prefill(2, 3, 0)});
  ASSERT_EQ(plan.work.size(), 1u);
  EXPECT_EQ(plan.work[0].layer_end, 4);
  EXPECT_EQ(plan.token_layers, 32);
}

}  // namespace
}  // namespace lightserve::scheduler
