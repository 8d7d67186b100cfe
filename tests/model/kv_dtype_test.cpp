// The KV cache in bf16 (--kv-dtype bf16) against the default f16 cache on the default model:
// next-token logits close, clear greedy first tokens kept, teacher-forced perplexity within 3%.
// Both run the CPU backend (the oracle), so only the cache's element type differs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/llama_model.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

class KvDtype : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    f16_ = testing::shared_model();
    if (f16_ == nullptr) return;
    backend_ = kernels::make_cpu_backend(0).release();
    LoadOptions options;
    options.kv_type = kernels::DType::kBF16;
    auto loaded = LlamaModel::load(gguf_testing::test_model_path(), *backend_, options);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    bf16_ = std::move(loaded).value().release();
  }
  static void TearDownTestSuite() {
    delete bf16_;
    bf16_ = nullptr;
    delete backend_;
    backend_ = nullptr;
  }
  void SetUp() override {
    if (f16_ == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  }

  static std::vector<int32_t> greedy(LlamaModel& model, const std::string& text, int tokens) {
    const std::vector<int32_t> prompt = model.tokenizer().encode(text, true, false);
    SequenceCache cache(model.config(), static_cast<int32_t>(prompt.size()) + tokens);
    GenerateParams params;
    params.max_tokens = tokens;
    params.ignore_eos = true;
    auto r = generate(model, cache, prompt, params);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? r.value().tokens : std::vector<int32_t>{};
  }

  // exp(mean negative log-likelihood) of every next token of `text`, one prompt, all logits.
  static double perplexity(LlamaModel& model, const std::vector<int32_t>& ids) {
    SequenceCache cache(model.config(), static_cast<int32_t>(ids.size()));
    std::vector<float> logits;
    BatchEntry entry{&cache, ids, /*all_logits=*/true};
    const Status s = model.forward({&entry, 1}, logits);
    EXPECT_TRUE(s.ok()) << s.message();
    if (!s.ok()) return 0;
    const int64_t vocab = model.config().vocab_size;
    double nll = 0;
    for (size_t t = 0; t + 1 < ids.size(); ++t) {
      const float* row = logits.data() + static_cast<int64_t>(t) * vocab;
      double max = row[0], sum = 0;
      for (int64_t v = 1; v < vocab; ++v) max = std::max<double>(max, row[v]);
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
      nll -= row[ids[t + 1]] - max - std::log(sum);
    }
    return std::exp(nll / static_cast<double>(ids.size() - 1));
  }

  static inline LlamaModel* f16_ = nullptr;
  static inline LlamaModel* bf16_ = nullptr;
  static inline kernels::Backend* backend_ = nullptr;
};

TEST_F(KvDtype, ModelReportsItsKvType) {
  EXPECT_EQ(f16_->kv_type(), kernels::DType::kF16);
  EXPECT_EQ(bf16_->kv_type(), kernels::DType::kBF16);
}

TEST_F(KvDtype, RejectsTypesThatAreNotKvTypes) {
  auto backend = kernels::make_cpu_backend(1);
  LoadOptions options;
  options.kv_type = kernels::DType::kF32;
  auto loaded = LlamaModel::load(gguf_testing::test_model_path(), *backend, options);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.error().message.find("must be f16 or bf16"), std::string::npos)
      << loaded.error().message;
}

// The next-token logits after each prompt: bf16 against f16 KV, the difference against the
// logits' spread and the top-2 gap (a diagnostic printed with the bound).
TEST_F(KvDtype, Bf16LogitsStayCloseToF16) {
  const char* prompts[] = {"The capital of France is", "The three primary colors are"};
  for (const char* prompt : prompts) {
    const std::vector<int32_t> ids = f16_->tokenizer().encode(prompt, true, false);
    const std::vector<float> a = testing::prompt_logits(*f16_, ids, false);
    const std::vector<float> b = testing::prompt_logits(*bf16_, ids, false);
    ASSERT_EQ(a.size(), b.size());
    double max_diff = 0, mean = 0, var = 0;
    for (float x : a) mean += x;
    mean /= static_cast<double>(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      max_diff = std::max<double>(max_diff, std::abs(a[i] - b[i]));
      var += (a[i] - mean) * (a[i] - mean);
    }
    const double sd = std::sqrt(var / static_cast<double>(a.size()));
    std::vector<float> sorted = a;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    std::printf("  %-40s max |bf16 - f16| %.4f, logit sd %.3f, f16 top-2 gap %.4f\n", prompt,
                max_diff, sd, sorted[0] - sorted[1]);
    EXPECT_LT(max_diff, 0.35 * sd) << prompt;  // measured 0.25 and 0.16 sd
  }
}

// Greedy decoding on this model sits on near-ties (docs/design.md §13, numerics: two llama.cpp
// builds differ by up to 0.85 in logits), and bf16 moves logits by up to ~0.9 (measured above),
// so continuations part after a few tokens. What must hold: where f16's first token leads by
// more than a logit, bf16 picks it too. Measured: first 2 / 1 / 10 / 0 of 32 tokens equal.
TEST_F(KvDtype, Bf16GreedyKeepsClearFirstTokens) {
  const char* prompts[] = {
      "The capital of France is",
      "Here is a short poem about the sea:\n",
      "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
      "The three primary colors are",
  };
  int clear = 0;
  for (const char* prompt : prompts) {
    const std::vector<int32_t> ids = f16_->tokenizer().encode(prompt, true, false);
    std::vector<float> logits = testing::prompt_logits(*f16_, ids, false);
    std::partial_sort(logits.begin(), logits.begin() + 2, logits.end(), std::greater<float>());
    const std::vector<int32_t> a = greedy(*f16_, prompt, 32);
    const std::vector<int32_t> b = greedy(*bf16_, prompt, 32);
    ASSERT_EQ(a.size(), 32u);
    ASSERT_EQ(b.size(), 32u);
    size_t same = 0;
    while (same < a.size() && a[same] == b[same]) ++same;
    const float gap = logits[0] - logits[1];
    std::printf("  %-40.40s: f16 top-2 gap %.3f, first %zu of 32 tokens equal\n", prompt, gap,
                same);
    if (gap > 1.0f) {
      ++clear;
      EXPECT_GE(same, 1u) << prompt;
    }
  }
  EXPECT_GE(clear, 1);
}

// Teacher-forced perplexity over the first 1024 tokens of a licence text (one prefill, every
// position's logits). Measured: f16 KV 20.045, bf16 KV 19.898 (−0.74%).
TEST_F(KvDtype, Bf16PerplexityWithinThreePercentOfF16) {
  std::ifstream in("/usr/share/common-licenses/GPL-3");
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().empty()) GTEST_SKIP() << "no /usr/share/common-licenses/GPL-3";
  std::vector<int32_t> ids = f16_->tokenizer().encode(text.str(), true, false);
  ids.resize(std::min<size_t>(ids.size(), 1024));
  const double p16 = perplexity(*f16_, ids);
  const double pb16 = perplexity(*bf16_, ids);
  std::printf("  perplexity over %zu tokens: f16 KV %.4f, bf16 KV %.4f (%+.3f%%)\n", ids.size(),
              p16, pb16, 100 * (pb16 / p16 - 1));
  EXPECT_NEAR(pb16 / p16, 1.0, 0.03);
}

}  // namespace
}  // namespace lightserve::model
