// LlamaModel::forward_argmax (the greedy step that brings back ids, not logits) on the CPU: the
// same rows as forward's logits, each reduced to sampling::argmax; refusals before any state
// changes. The GPU's version is compared in cuda_model_test.cpp. LlamaModel::forward_candidates
// (entries asking for their row's best k): each such row is the first k of forward's row in
// sampling::ranks_before order, the other rows forward's, with and without a row sink in the
// batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "sampling/sampler.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

std::vector<int32_t> argmax_rows(const std::vector<float>& logits, int32_t vocab) {
  std::vector<int32_t> ids;
  for (size_t at = 0; at < logits.size(); at += static_cast<size_t>(vocab)) {
    ids.push_back(sampling::argmax({logits.data() + at, static_cast<size_t>(vocab)}));
  }
  return ids;
}

TEST(ForwardArgmax, EqualsTheArgmaxOfForwardsLogitsRowByRow) {
  LlamaModel* model = testing::shared_model();
  if (model == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  const int32_t vocab = model->config().vocab_size;
  const std::vector<int32_t> p1 = model->tokenizer().encode("The lighthouse keeper climbed", true);
  const std::vector<int32_t> p2 =
      model->tokenizer().encode("One winter a storm broke the great lens, and", true);
  SequenceCache a1(model->config(), 64), a2(model->config(), 64);
  SequenceCache b1(model->config(), 64), b2(model->config(), 64);
  // A prefill batch with every row of the first prompt, then greedy decode steps of both.
  std::vector<float> logits;
  std::vector<int32_t> ids;
  const BatchEntry by_logits[] = {{&a1, p1, true}, {&a2, p2, false}};
  const BatchEntry by_ids[] = {{&b1, p1, true}, {&b2, p2, false}};
  ASSERT_TRUE(model->forward(by_logits, logits).ok());
  ASSERT_TRUE(model->forward_argmax(by_ids, ids).ok());
  ASSERT_EQ(ids.size(), p1.size() + 1);
  EXPECT_EQ(ids, argmax_rows(logits, vocab));
  std::vector<int32_t> next = {ids[p1.size() - 1], ids.back()};  // each sequence's greedy token
  for (int step = 0; step < 4; ++step) {
    const BatchEntry d_logits[] = {{&a1, {&next[0], 1}, false}, {&a2, {&next[1], 1}, false}};
    const BatchEntry d_ids[] = {{&b1, {&next[0], 1}, false}, {&b2, {&next[1], 1}, false}};
    ASSERT_TRUE(model->forward(d_logits, logits).ok());
    ASSERT_TRUE(model->forward_argmax(d_ids, ids).ok());
    ASSERT_EQ(ids.size(), 2u);
    EXPECT_EQ(ids, argmax_rows(logits, vocab)) << "step " << step;
    next = ids;
  }
}

TEST(ForwardArgmax, RefusesRowSinksBeforeTouchingTheCache) {
  LlamaModel* model = testing::shared_model();
  if (model == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  const std::vector<int32_t> p = model->tokenizer().encode("Hello there", true);
  SequenceCache cache(model->config(), 16);
  const RowSink sink = [](int32_t, int32_t, const float*) {};
  BatchEntry e{&cache, p, false};
  e.row_sink = &sink;
  std::vector<int32_t> ids;
  const Status s = model->forward_argmax({&e, 1}, ids);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("row sink"), std::string::npos) << s.message();
  EXPECT_EQ(cache.size(), 0);
}

// The best k of a row, as forward_candidates must return them.
std::vector<sampling::Candidate> best_of(const float* row, int32_t vocab, int32_t k) {
  std::vector<sampling::Candidate> all;
  for (int32_t i = 0; i < vocab; ++i) all.push_back({i, row[i]});
  std::sort(all.begin(), all.end(), sampling::ranks_before);
  all.resize(static_cast<size_t>(k));
  return all;
}

TEST(ForwardCandidates, AreTheBestOfForwardsRowsTheOtherRowsUnchanged) {
  LlamaModel* model = testing::shared_model();
  if (model == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  const int32_t vocab = model->config().vocab_size;
  const std::vector<std::vector<int32_t>> prompts = {
      model->tokenizer().encode("The lighthouse keeper climbed", true),
      model->tokenizer().encode("One winter a storm broke the great lens, and", true),
      model->tokenizer().encode("List three colors:", true),
      model->tokenizer().encode("int main() {", true)};
  const std::vector<int32_t> ks = {5, 0, 1, 256};  // the second entry gets its whole row
  for (const bool with_sink : {false, true}) {
    SCOPED_TRACE(with_sink ? "a row sink in the batch" : "no row sink");
    std::vector<std::unique_ptr<SequenceCache>> ref, red;
    int32_t sunk = 0;  // rows the sink saw (the whole-row entry's prompt, in both calls)
    const RowSink sink = [&](int32_t, int32_t count, const float*) { sunk += count; };
    std::vector<BatchEntry> by_logits, by_candidates;
    for (size_t i = 0; i < prompts.size(); ++i) {
      ref.push_back(std::make_unique<SequenceCache>(model->config(), 64));
      red.push_back(std::make_unique<SequenceCache>(model->config(), 64));
      by_logits.push_back({ref.back().get(), prompts[i], false});
      by_candidates.push_back({red.back().get(), prompts[i], false});
      by_candidates.back().num_candidates = ks[i];
      if (with_sink && ks[i] == 0) {
        by_logits.back().row_sink = by_candidates.back().row_sink = &sink;
      }
    }
    std::vector<int32_t> next(prompts.size());  // each sequence's greedy token, decoded next
    for (int step = 0; step < 3; ++step) {
      std::vector<float> logits, whole;
      std::vector<kernels::Ranked> candidates;
      ASSERT_TRUE(model->forward(by_logits, logits).ok());
      ASSERT_TRUE(model->forward_candidates(by_candidates, whole, candidates).ok());
      ASSERT_EQ(logits.size(), prompts.size() * static_cast<size_t>(vocab));
      ASSERT_EQ(whole.size(), static_cast<size_t>(vocab));  // the k = 0 entry's row only
      ASSERT_EQ(candidates.size(), 5u + 1u + 256u);
      size_t at = 0;
      std::vector<int32_t> chosen;
      for (size_t i = 0; i < prompts.size(); ++i) {
        const float* row = logits.data() + i * static_cast<size_t>(vocab);
        if (ks[i] == 0) {
          EXPECT_TRUE(std::equal(whole.begin(), whole.end(), row)) << "step " << step;
          chosen.push_back(sampling::argmax({row, static_cast<size_t>(vocab)}));
          continue;
        }
        const std::vector<sampling::Candidate> want = best_of(row, vocab, ks[i]);
        for (int32_t j = 0; j < ks[i]; ++j) {
          const kernels::Ranked& got = candidates[at + static_cast<size_t>(j)];
          ASSERT_EQ(got.id, want[j].id) << "step " << step << " entry " << i << " rank " << j;
          ASSERT_EQ(got.value, want[j].value) << "step " << step << " entry " << i;
        }
        chosen.push_back(candidates[at].id);
        at += static_cast<size_t>(ks[i]);
      }
      next = chosen;  // same size: the spans below keep pointing into it
      for (size_t i = 0; i < prompts.size(); ++i) {
        const std::span<const int32_t> token(&next[i], 1);
        by_logits[i].tokens = by_candidates[i].tokens = token;
        by_logits[i].row_sink = by_candidates[i].row_sink = nullptr;
      }
    }
    EXPECT_EQ(sunk, with_sink ? 2 * static_cast<int32_t>(prompts[1].size()) : 0);
  }
}

TEST(ForwardCandidates, RefusesWhatCannotBeReducedBeforeTouchingTheCache) {
  LlamaModel* model = testing::shared_model();
  if (model == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  const std::vector<int32_t> p = model->tokenizer().encode("Hello there", true);
  SequenceCache cache(model->config(), 16);
  std::vector<float> logits;
  std::vector<kernels::Ranked> candidates;
  BatchEntry over{&cache, p, false};
  over.num_candidates = kernels::kMaxTopK + 1;
  BatchEntry all{&cache, p, /*all_logits=*/true};
  all.num_candidates = 3;
  for (const BatchEntry& e : {over, all}) {
    const Status s = model->forward_candidates({&e, 1}, logits, candidates);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("num_candidates"), std::string::npos) << s.message();
    EXPECT_EQ(cache.size(), 0);
  }
}

}  // namespace
}  // namespace lightserve::model
