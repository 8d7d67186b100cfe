// LlamaModel::forward_argmax (the greedy step that brings back ids, not logits) on the CPU: the
// same rows as forward's logits, each reduced to sampling::argmax; refusals before any state
// changes. The GPU's version is compared in cuda_model_test.cpp.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace lightserve::model
