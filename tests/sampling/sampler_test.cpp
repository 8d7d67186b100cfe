// The sampler: greedy, seeded draws with the right frequencies, filters, penalties, and range
// checks that name the field.
#include "sampling/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace lightserve::sampling {
namespace {

SamplingParams plain(float temperature) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  Sampler s(plain(0));
  EXPECT_EQ(s.sample(std::vector<float>{0.5f, 2.0f, 2.0f, -1.0f}), 1);
}

TEST(Sampler, DrawsFollowTheSoftmax) {
  // p(1) = 3 / (1 + 3) = 0.75 at temperature 1; at temperature 0.5 it is 9 / 10.
  for (const auto& [temperature, expected] : {std::pair{1.0f, 0.75}, std::pair{0.5f, 0.9}}) {
    Sampler s(plain(temperature));
    const std::vector<float> logits{0.0f, std::log(3.0f)};
    int ones = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) ones += s.sample(logits);
    EXPECT_NEAR(static_cast<double>(ones) / n, expected, 0.015) << temperature;
  }
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingParams p = plain(1.0f);
  p.seed = 42;
  Sampler a(p), b(p);
  const std::vector<float> logits{0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(logits), b.sample(logits));
}

TEST(Sampler, TopKOneIsGreedy) {
  SamplingParams p = plain(5.0f);
  p.top_k = 1;
  Sampler s(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(std::vector<float>{1.0f, 3.0f, 2.9f}), 1);
}

TEST(Sampler, RepetitionPenaltyAppliesToPromptAndOutput) {
  SamplingParams p = plain(0);
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  // Token 0 (logit 3, seen in the prompt) drops to 1.5 < token 2's 2.0.
  const std::vector<int32_t> prompt{0};
  EXPECT_EQ(s.sample(std::vector<float>{3.0f, -1.0f, 2.0f}, prompt, {}), 2);
  // Negative logits are multiplied: token 1 (−1 → −2) stays below token 2.
  const std::vector<int32_t> output{2};
  EXPECT_EQ(s.sample(std::vector<float>{-3.0f, -1.0f, 1.5f}, {}, output), 2);  // 1.5/2 = .75
  EXPECT_EQ(s.sample(std::vector<float>{-3.0f, 0.5f, 1.5f}, {}, output), 2);   // .75 > .5
  EXPECT_EQ(s.sample(std::vector<float>{-3.0f, 0.8f, 1.5f}, {}, output), 1);   // .75 < .8
}

TEST(Sampler, PresenceAndFrequencyCountTheOutputOnly) {
  SamplingParams p = plain(0);
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s(p);
  const std::vector<int32_t> prompt{1, 1, 1};
  const std::vector<int32_t> output{0, 0};  // token 0: 2.0 − 0.5 − 2·0.25 = 1.0
  EXPECT_EQ(s.sample(std::vector<float>{2.0f, 1.1f}, prompt, output), 1);
  EXPECT_EQ(s.sample(std::vector<float>{2.0f, 0.9f}, prompt, output), 0);
  EXPECT_EQ(s.sample(std::vector<float>{2.0f, 1.1f}, prompt, {}), 0);  // prompt not counted
}

TEST(Sampler, LogitBiasShiftsTheLogitsBeforeEverythingElse) {
  SamplingParams p = plain(0);
  p.logit_bias = {{0, 5.0f}, {3, -100.0f}, {99, 50.0f}};  // 99: outside the logits, ignored
  Sampler greedy(p);
  EXPECT_EQ(greedy.sample(std::vector<float>{1.0f, 4.0f, 2.0f, 9.0f}), 0);  // 6 > 4, 9 - 100
  // Drawn: a banned token never comes up.
  p = plain(1);
  p.seed = 3;
  p.logit_bias = {{1, -100.0f}};
  Sampler drawn(p);
  for (int i = 0; i < 500; ++i) EXPECT_NE(drawn.sample(std::vector<float>{0.0f, 3.0f, 0.0f}), 1);
}

TEST(Sampler, MinTokensHoldsTheBlockedIdsUntilTheOutputIsLongEnough) {
  SamplingParams p = plain(0);
  p.min_tokens = 2;
  p.min_tokens_blocked = {2};  // say, EOS
  Sampler s(p);
  const std::vector<float> logits = {0.0f, 1.0f, 5.0f};
  const std::vector<int32_t> none, one = {1}, two = {1, 1};
  EXPECT_EQ(s.sample(logits, {}, none), 1);  // EOS would win; held back
  EXPECT_EQ(s.sample(logits, {}, one), 1);
  EXPECT_EQ(s.sample(logits, {}, two), 2);  // two tokens out: allowed again
}

TEST(Sampler, ValidateNamesTheField) {
  struct Case {
    SamplingParams params;
    const char* field;
  };
  std::vector<Case> cases;
  SamplingParams p;
  p.temperature = -1;
  cases.push_back({p, "temperature"});
  p = {};
  p.top_p = 0;
  cases.push_back({p, "top_p"});
  p = {};
  p.min_p = 2;
  cases.push_back({p, "min_p"});
  p = {};
  p.top_k = -1;
  cases.push_back({p, "top_k"});
  p = {};
  p.repetition_penalty = 0;
  cases.push_back({p, "repetition_penalty"});
  p = {};
  p.logit_bias = {{3, 101.0f}};
  cases.push_back({p, "logit_bias"});
  p = {};
  p.min_tokens = -1;
  cases.push_back({p, "min_tokens"});
  p = {};
  p.presence_penalty = 3;
  cases.push_back({p, "presence_penalty"});
  p = {};
  p.frequency_penalty = NAN;
  cases.push_back({p, "frequency_penalty"});
  for (const Case& c : cases) {
    const Status s = c.params.validate();
    ASSERT_FALSE(s.ok()) << c.field;
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s.message();
  }
  EXPECT_TRUE(SamplingParams{}.validate().ok());
}

}  // namespace
}  // namespace lightserve::sampling
