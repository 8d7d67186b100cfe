// scheduler::token_logprobs: the log-softmax of raw logits, the most likely alternatives (ties:
// lower id first) and the token's rank (1 + how many are strictly more likely), against values
// worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "scheduler/events.h"

namespace lightserve::scheduler {
namespace {

TEST(TokenLogprobs, LogSoftmaxTopAndRank) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 0.0f};
  double z = 0;
  for (float v : logits) z += std::exp(static_cast<double>(v));
  const double log_z = std::log(z);

  const TokenLogprobs third = token_logprobs(logits, 2, 3);
  EXPECT_NEAR(third.logprob, 2.0 - log_z, 1e-6);
  EXPECT_EQ(third.rank, 3);  // ids 1 and 3 are more likely
  ASSERT_EQ(third.top.size(), 3u);
  EXPECT_EQ(third.top[0].token_id, 1);  // the tie of 1 and 3: lower id first
  EXPECT_EQ(third.top[1].token_id, 3);
  EXPECT_EQ(third.top[2].token_id, 2);
  EXPECT_NEAR(third.top[0].logprob, 3.0 - log_z, 1e-6);

  // Tied with the best: nothing is strictly more likely.
  EXPECT_EQ(token_logprobs(logits, 3, 0).rank, 1);
  EXPECT_TRUE(token_logprobs(logits, 3, 0).top.empty());
  EXPECT_EQ(token_logprobs(logits, 4, 0).rank, 5);
  // More alternatives asked than the vocabulary has: all of it.
  EXPECT_EQ(token_logprobs(logits, 0, 9).top.size(), logits.size());
}

}  // namespace
}  // namespace lightserve::scheduler
