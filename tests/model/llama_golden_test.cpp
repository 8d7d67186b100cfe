// The forward pass against llama.cpp on the default model (goldens from
// scripts/goldens/generate_goldens.py, llama-cpp-python 0.3.36): identical greedy continuations
// and logits within a stated tolerance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kernels/backend.h"
#include "model/llama_model.h"
#include "sampling/sampler.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
using sampling::argmax;
namespace {

// What "like llama.cpp" can mean on this model, measured (docs/benchmarks.md, "Agreement with
// llama.cpp"): SmolLM2-135M-Instruct Q4_1 has outlier activations (a residual feature reaching
// ~10^4 after layer 10) and every matmul quantizes its input to 8 bits per block of 32, so a
// one-ulp difference anywhere can flip an int8 rounding next to an outlier and move later logits
// by tenths. llama.cpp is not reproducible with itself here: the same pinned version built with
// clang instead of GCC (tests/golden/generation_llamacpp_clang.json) differs from the GCC build's
// logits by up to 0.85 at identical contexts and agrees on the full 64-token greedy continuation
// for only 2 of the 6 prompts. The checks below hold us to that standard:
//  - position 0 (no attention mixing yet): every checked logit within 1e-3 (we match to ~1e-5);
//  - every other checked position: within the build-to-build spread, kLogitTolerance;
//  - greedy: at every step where llama.cpp's top-2 gap exceeds the tolerance, our argmax is
//    llama.cpp's token (steps are teacher-forced with llama.cpp's tokens, so one near-tie does not
//    hide the rest), and at least as many prompts as the clang build match all 64 tokens.
constexpr double kFirstPositionTolerance = 1e-3;
constexpr double kLogitTolerance = 1.0;
constexpr int kMinIdenticalContinuations = 2;

class LlamaGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = testing::shared_model();
    std::ifstream in(std::string(LIGHTSERVE_GOLDEN_DIR) + "/generation.json");
    ASSERT_TRUE(in.good());
    golden_ = new nlohmann::json(nlohmann::json::parse(in));
  }
  static void TearDownTestSuite() { delete golden_; }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  }

  static LlamaModel* model_;
  static nlohmann::json* golden_;
};
LlamaModel* LlamaGolden::model_ = nullptr;
nlohmann::json* LlamaGolden::golden_ = nullptr;

double compare_logits(const nlohmann::json& record, std::span<const float> row, double tolerance,
                      const std::string& what) {
  double max_diff = 0;
  for (const char* ids_key : {"top_ids", "random_ids"}) {
    const std::string logits_key =
        std::string(ids_key) == "top_ids" ? "top_logits" : "random_logits";
    const auto& ids = record[ids_key];
    const auto& expected = record[logits_key];
    for (size_t i = 0; i < ids.size(); ++i) {
      const double diff = std::abs(row[ids[i].get<int>()] - expected[i].get<double>());
      max_diff = std::max(max_diff, diff);
      EXPECT_LE(diff, tolerance) << what << " token " << ids[i] << ": ours "
                                 << row[ids[i].get<int>()] << ", llama.cpp " << expected[i];
    }
  }
  return max_diff;
}

TEST_F(LlamaGolden, GreedyContinuationsAndLogitsMatchLlamaCpp) {
  const int32_t vocab = model_->config().vocab_size;
  double worst = 0;
  int identical = 0;
  for (const auto& p : (*golden_)["prompts"]) {
    const std::string name = p["name"];
    const std::vector<int32_t> prompt = p["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> expected = p["continuation_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(model_->tokenizer().encode(p["prompt"].get<std::string>(), false,
                                         p["tokenize"]["special"].get<bool>()),
              prompt)
        << name;

    SequenceCache cache(model_->config(), static_cast<int32_t>(prompt.size() + expected.size()));
    std::vector<float> prompt_logits, logits;
    const BatchEntry prefill{&cache, prompt, /*all_logits=*/true};
    ASSERT_TRUE(model_->forward({&prefill, 1}, prompt_logits).ok());
    ASSERT_EQ(prompt_logits.size(), prompt.size() * vocab);

    std::vector<int32_t> generated;
    std::vector<std::vector<float>> rows_by_position;  // logits of generated positions
    std::span<const float> last(prompt_logits.data() + (prompt.size() - 1) * vocab, vocab);
    const auto& gaps = p["continuation_top2_gap"];
    for (size_t step = 0; step < expected.size(); ++step) {
      const int32_t id = argmax(last);
      generated.push_back(id);
      if (gaps[step].get<double>() > kLogitTolerance) {
        EXPECT_EQ(id, expected[step])
            << name << " step " << step << ": llama.cpp's choice was clear (gap "
            << gaps[step].get<double>() << ")";
      }
      if (step + 1 == expected.size()) break;
      // Feed llama.cpp's token so one divergence does not hide the logits of later steps.
      const int32_t feed = expected[step];
      const BatchEntry entry{&cache, std::span(&feed, 1), false};
      ASSERT_TRUE(model_->forward({&entry, 1}, logits).ok());
      rows_by_position.push_back(logits);
      last = std::span<const float>(rows_by_position.back());
    }
    size_t first_diff = 0;
    while (first_diff < generated.size() && generated[first_diff] == expected[first_diff])
      ++first_diff;
    std::printf("%-16s greedy: %zu/%zu tokens as llama.cpp%s", name.c_str(), first_diff,
                expected.size(), first_diff < expected.size() ? "" : "\n");
    if (first_diff < expected.size()) {
      std::printf(" (llama.cpp's top-2 gap there: %.4f)\n", gaps[first_diff].get<double>());
    } else {
      ++identical;
    }

    for (const auto& record : p["logits"]) {
      const int64_t pos = record["position"];
      std::span<const float> row;
      if (pos < static_cast<int64_t>(prompt.size())) {
        row = std::span<const float>(prompt_logits.data() + pos * vocab, vocab);
      } else {
        row = rows_by_position.at(pos - static_cast<int64_t>(prompt.size()));
      }
      const double diff =
          compare_logits(record, row, pos == 0 ? kFirstPositionTolerance : kLogitTolerance,
                         name + " @" + std::to_string(pos));
      std::printf("  %-16s logits @%-4lld max |diff| %.4f\n", name.c_str(),
                  static_cast<long long>(pos), diff);
      worst = std::max(worst, diff);
    }
  }
  std::printf("max |logit − llama.cpp| over all checked logits: %.5f (tolerance %.3f)\n", worst,
              kLogitTolerance);
  std::printf("identical 64-token greedy continuations: %d of %zu prompts\n", identical,
              (*golden_)["prompts"].size());
  EXPECT_GE(identical, kMinIdenticalContinuations);
}

}  // namespace
}  // namespace lightserve::model

namespace lightserve::model {
namespace {

// The tolerance above is llama.cpp's own build-to-build spread: recompute it from the two
// committed golden files (GCC and clang builds of the same pinned llama.cpp) at the positions
// whose context is identical in both (prompt positions).
TEST(LlamaGoldenData, ToleranceCoversLlamaCppBuildToBuildSpread) {
  std::ifstream gcc_in(std::string(LIGHTSERVE_GOLDEN_DIR) + "/generation.json");
  std::ifstream clang_in(std::string(LIGHTSERVE_GOLDEN_DIR) + "/generation_llamacpp_clang.json");
  const auto gcc = nlohmann::json::parse(gcc_in);
  const auto clang = nlohmann::json::parse(clang_in);
  double spread = 0;
  int identical = 0;
  for (size_t i = 0; i < gcc["prompts"].size(); ++i) {
    const auto& a = gcc["prompts"][i];
    const auto& b = clang["prompts"][i];
    ASSERT_EQ(a["prompt_ids"], b["prompt_ids"]);
    identical += a["continuation_ids"] == b["continuation_ids"] ? 1 : 0;
    const int64_t num_prompt = static_cast<int64_t>(a["prompt_ids"].size());
    for (size_t r = 0; r < a["logits"].size(); ++r) {
      if (a["logits"][r]["position"].get<int64_t>() >= num_prompt) continue;
      const auto& rid = a["logits"][r]["random_ids"];
      ASSERT_EQ(rid, b["logits"][r]["random_ids"]);
      for (size_t k = 0; k < rid.size(); ++k) {
        spread = std::max(spread, std::abs(a["logits"][r]["random_logits"][k].get<double>() -
                                           b["logits"][r]["random_logits"][k].get<double>()));
      }
    }
  }
  std::printf(
      "llama.cpp GCC vs clang build: max |logit diff| %.3f at prompt positions, %d of %zu "
      "greedy continuations identical\n",
      spread, identical, gcc["prompts"].size());
  EXPECT_GT(spread, 0.1);  // the builds really disagree
  EXPECT_LE(spread, kLogitTolerance);
  EXPECT_LE(identical, static_cast<int>(gcc["prompts"].size()));
}

}  // namespace
}  // namespace lightserve::model
