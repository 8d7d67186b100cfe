// Sampling from a row's best candidates (Sampler::sample over Candidate) gives the whole row's
// draw, token for token and RNG state for RNG state; ranks_before is a strict total order whose
// first element is argmax(row), NaN and ties included; candidates_needed asks for candidates only
// when nothing but the best few tokens is read.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "sampling/sampler.h"

namespace lightserve::sampling {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Logits with many ties (a few levels), and, by `kind`, NaNs (also at index 0), ±0 and ±inf.
std::vector<float> random_row(std::mt19937& rng, int32_t vocab, int kind) {
  std::uniform_int_distribution<int> level(0, 11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> row(static_cast<size_t>(vocab));
  for (float& v : row) v = kind == 0 ? normal(rng) : 0.5f * static_cast<float>(level(rng)) - 2.0f;
  if (kind >= 2) {
    std::uniform_int_distribution<int32_t> at(0, vocab - 1);
    for (float special : {kNaN, kNaN, -0.0f, 0.0f, kInf, -kInf, 3.5f, 3.5f}) row[at(rng)] = special;
  }
  if (kind == 3) row[0] = kNaN;
  return row;
}

std::vector<Candidate> ranked(const std::vector<float>& row) {
  std::vector<Candidate> all;
  for (size_t i = 0; i < row.size(); ++i) all.push_back({static_cast<int32_t>(i), row[i]});
  std::sort(all.begin(), all.end(), ranks_before);
  return all;
}

TEST(RanksBefore, IsAStrictTotalOrderLedByArgmax) {
  std::mt19937 rng(7);
  for (int kind = 0; kind < 4; ++kind) {
    for (int trial = 0; trial < 20; ++trial) {
      const std::vector<float> row = random_row(rng, 97, kind);
      const std::vector<Candidate> all = ranked(row);
      EXPECT_EQ(all[0].id, argmax(row)) << "kind " << kind;
      for (size_t i = 0; i < all.size(); ++i) {
        EXPECT_FALSE(ranks_before(all[i], all[i]));
        for (size_t j = i + 1; j < all.size(); ++j) {
          // Sorted and total: every earlier element ranks before every later one, never back.
          EXPECT_TRUE(ranks_before(all[i], all[j])) << all[i].id << " vs " << all[j].id;
          EXPECT_FALSE(ranks_before(all[j], all[i]));
        }
      }
    }
  }
  // The cases one by one: ties by id, -0 = +0, NaN first only at id 0.
  EXPECT_TRUE(ranks_before({2, 1.0f}, {5, 1.0f}));
  EXPECT_TRUE(ranks_before({2, -0.0f}, {5, 0.0f}));
  EXPECT_TRUE(ranks_before({2, 0.0f}, {5, -0.0f}));
  EXPECT_TRUE(ranks_before({0, kNaN}, {1, kInf}));
  EXPECT_FALSE(ranks_before({1, -kInf}, {0, -kInf}));
  EXPECT_TRUE(ranks_before({3, -kInf}, {1, kNaN}));
  EXPECT_TRUE(ranks_before({1, kNaN}, {3, kNaN}));
}

SamplingParams params(float temperature, int32_t top_k, float top_p, float min_p, uint64_t seed) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = seed;
  return p;
}

// Two samplers with one seed: one draws from whole rows, the other from each row's best
// candidates_needed() (plus a few more, which it must ignore). Every draw, hence every RNG state,
// is the same.
TEST(CandidateSampling, DrawsWhatTheWholeRowDraws) {
  constexpr int32_t kVocab = 300, kMaxCandidates = 256;
  const std::vector<SamplingParams> cases = {
      params(0.0f, 40, 0.95f, 0.05f, 1),   // greedy
      params(0.8f, 40, 0.95f, 0.05f, 2),   // the defaults
      params(1.0f, 5, 1.0f, 0.0f, 3),      // top-k alone
      params(1.3f, 20, 0.7f, 0.0f, 4),     // top-p cuts inside the k
      params(0.6f, 64, 1.0f, 0.2f, 5),     // min-p cuts inside the k
      params(1.0f, 1, 1.0f, 0.0f, 6),      // top-1
      params(2.0f, 256, 0.99f, 0.01f, 7),  // the cap
      params(1.0f, 5000, 1.0f, 0.0f, 8),   // top-k over the vocabulary: all of it
  };
  for (int32_t vocab : {kVocab, 200}) {
    for (const SamplingParams& p : cases) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + " temperature " +
                   std::to_string(p.temperature) + " top_k " + std::to_string(p.top_k));
      Sampler whole(p), reduced(p);
      const int32_t k = reduced.candidates_needed(0, vocab, kMaxCandidates);
      if (p.top_k > vocab && vocab > kMaxCandidates) {
        EXPECT_EQ(k, 0);  // the whole vocabulary is over the cap
        continue;
      }
      ASSERT_EQ(k, p.temperature <= 0 ? 1 : std::min(p.top_k, vocab));
      std::mt19937 rng(static_cast<uint32_t>(p.seed));
      int distinct = 0, previous = -1;
      for (int step = 0; step < 300; ++step) {
        const std::vector<float> row = random_row(rng, vocab, step % 4);
        std::vector<Candidate> best = ranked(row);
        best.resize(std::min<size_t>(best.size(), static_cast<size_t>(k) + 3));
        const int32_t a = whole.sample(row);
        const int32_t b = reduced.sample(best);
        ASSERT_EQ(a, b) << "step " << step;
        distinct += a != previous;
        previous = a;
      }
      if (p.temperature > 0 && p.top_k > 1) {
        EXPECT_GT(distinct, 50) << "the draws hardly vary";
      }
    }
  }
}

TEST(CandidateSampling, NeededOnlyWhenNothingElseReadsTheRow) {
  SamplingParams p = params(0.7f, 40, 0.9f, 0.0f, 1);
  EXPECT_EQ(Sampler(p).candidates_needed(0, 1000, 256), 40);
  EXPECT_EQ(Sampler(p).candidates_needed(0, 1000, 39), 0);  // over what the executor returns
  EXPECT_EQ(Sampler(p).candidates_needed(0, 1000, 0), 0);
  EXPECT_EQ(Sampler(p).candidates_needed(0, 30, 256), 30);  // k over the vocabulary: all of it
  SamplingParams greedy = params(0.0f, 0, 1.0f, 0.0f, 1);
  EXPECT_EQ(Sampler(greedy).candidates_needed(0, 1000, 256), 1);
  SamplingParams off = params(0.7f, 0, 0.9f, 0.0f, 1);  // top-k off: the whole row is sorted
  EXPECT_EQ(Sampler(off).candidates_needed(0, 1000, 256), 0);

  for (int which = 0; which < 4; ++which) {
    SamplingParams q = which == 3 ? greedy : p;
    if (which == 0) q.repetition_penalty = 1.1f;
    if (which == 1) q.frequency_penalty = 0.5f;
    if (which == 2) q.logit_bias = {{3, 1.0f}};
    if (which == 3) q.presence_penalty = -0.5f;
    EXPECT_EQ(Sampler(q).candidates_needed(0, 1000, 256), 0) << which;
  }
  // min_tokens blocks its ids while the output is short, then the row is not read any more.
  SamplingParams blocking = p;
  blocking.min_tokens = 3;
  blocking.min_tokens_blocked = {2};
  EXPECT_EQ(Sampler(blocking).candidates_needed(2, 1000, 256), 0);
  EXPECT_EQ(Sampler(blocking).candidates_needed(3, 1000, 256), 40);
  blocking.min_tokens_blocked.clear();  // nothing to block (ignore_eos, no stop ids)
  EXPECT_EQ(Sampler(blocking).candidates_needed(0, 1000, 256), 40);
}

}  // namespace
}  // namespace lightserve::sampling
