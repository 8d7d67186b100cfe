// The `lightserve calibrate` and `lightserve eval` subcommands, run as a user runs them: a plan
// that loads, a perplexity that parses, and bad inputs that fail with a clear message and exit 2.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "model/lighttransfer.h"
#include "tests/support/cli_runner.h"

namespace {

namespace fs = std::filesystem;

const std::string& kBinary = lightserve::testing::kLightserveBinary;
const std::string kModel = LIGHTSERVE_TEST_MODEL;

struct CliRun {
  int code = -1;
  std::string output;  // stdout and stderr together
};

CliRun run_cli(const std::string& args) {
  const auto r = lightserve::testing::run_lightserve(args + " --model " + kModel);
  return {r.code, r.out + r.err};
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel))
      GTEST_SKIP() << "model file absent: " << kModel << " (scripts/fetch_model.sh)";
    if (!fs::exists(kBinary)) GTEST_SKIP() << "lightserve binary absent: " << kBinary;
    dir_ = fs::temp_directory_path() /
           ("lightserve_cli_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::string write(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << content;
    return p.string();
  }
  fs::path dir_;
};

TEST_F(CliTest, CalibrateWritesAPlanRankingEveryLayer) {
  const std::string prompts = write(
      "prompts.jsonl",
      "{\"prompt\": \"The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.\"}\n"
      "{\"prompt\": \"Once upon a time there was a small village by the sea, where fishermen "
      "mended their nets every morning.\"}\n");
  const std::string plan_path = (dir_ / "plan.yaml").string();
  // A window smaller than the prompts, so the ratios carry information.
  const CliRun r = run_cli("calibrate --prompts " + prompts + " --out " + plan_path +
                           " --window 8 --sink 2 --w-last 4 --lazy-fraction 0.5");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("lazy_freq"), std::string::npos) << r.output;
  auto plan = lightserve::model::LtPlan::load(plan_path);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_layers, 30);
  EXPECT_EQ(plan->num_prompts, 2);
  EXPECT_EQ(plan->ranking.size(), 30u);
  ASSERT_EQ(plan->lazy_frequency.size(), 30u);
  double lazy_total = 0;
  for (double f : plan->lazy_frequency) lazy_total += f;
  EXPECT_DOUBLE_EQ(lazy_total, 15.0);  // 15 lazy layers per prompt, 2 prompts
  // The ranking starts with the laziest layer.
  for (size_t i = 1; i < plan->ranking.size(); ++i) {
    EXPECT_GE(plan->lazy_frequency[plan->ranking[i - 1]], plan->lazy_frequency[plan->ranking[i]]);
  }
}

TEST_F(CliTest, CalibrateQualityWritesTheLargestFractionWithinTheBound) {
  std::string text;
  for (int i = 0; i < 12; ++i) {
    text +=
        "The committee met on a Tuesday to discuss the budget for the coming year. Several "
        "members raised concerns about the cost of the new library building. ";
  }
  const std::string text_path = write("text.txt", text);
  const std::string prompts = write("prompts.jsonl", "{\"prompt\": \"" + text + "\"}\n");
  const std::string plan_path = (dir_ / "plan.yaml").string();
  const CliRun r = run_cli("calibrate --prompts " + prompts + " --out " + plan_path +
                           " --window 16 --sink 2 --w-last 4 --quality --gate-fractions 0.25,0.5"
                           " --passkey-lengths 160 --passkey-trials 2 --ppl-text " +
                           text_path + " --ppl-prefix 48 --ppl-length 96 --bound-ppl 5");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("validated: score"), std::string::npos) << r.output;
  auto plan = lightserve::model::LtPlan::load(plan_path);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  // full, then 3 scores × 2 fractions, each with its passkey accuracy and perplexity.
  ASSERT_EQ(plan->quality.size(), 7u);
  const auto& full = plan->quality.front();
  EXPECT_EQ(full.label, "full");
  EXPECT_EQ(plan->bound_ppl_percent, 5.0);
  EXPECT_EQ(plan->passkey_trials, 2);
  EXPECT_EQ(plan->window, 16);
  for (const auto& p : plan->quality) {
    ASSERT_EQ(p.passkey_lengths, std::vector<int32_t>{160}) << p.label;
    EXPECT_GT(p.ppl, 1.0) << p.label;
    if (p.score.empty()) continue;
    const bool within =
        p.ppl <= full.ppl * 1.05 && p.passkey_accuracy[0] >= full.passkey_accuracy[0] - 2;
    EXPECT_EQ(p.within_bound, within) << p.label;
  }
  // The validated fraction: for its score, it and every smaller tried fraction are within the
  // bound; no score has a larger such fraction.
  auto within = [&](const std::string& score, double f) {
    for (const auto& p : plan->quality) {
      if (p.score == score && p.lazy_fraction == f) return p.within_bound;
    }
    return false;
  };
  double best = 0;
  for (const char* score : {"mean", "head-min", "head-min-last"}) {
    double v = 0;
    for (double f : {0.25, 0.5}) {
      if (!within(score, f)) break;
      v = f;
    }
    best = std::max(best, v);
  }
  EXPECT_EQ(plan->validated_fraction, best);
  EXPECT_EQ(plan->lazy_fraction, best);
  if (best > 0) {
    EXPECT_TRUE(within(std::string(lightserve::model::to_string(plan->score)), best));
  }
}

TEST_F(CliTest, CalibrateWarnsWhenPromptsAreShorterThanTheWindow) {
  const std::string prompts =
      write("prompts.txt", "Hello there.\\nHow are you?\nA second prompt.\n");
  const CliRun r =
      run_cli("calibrate --prompts " + prompts + " --out " + (dir_ / "p.yaml").string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("no information"), std::string::npos) << r.output;
}

TEST_F(CliTest, EvalPerplexityParsesAndIsFinite) {
  std::string text;
  for (int i = 0; i < 20; ++i) {
    text +=
        "The committee met on a Tuesday to discuss the budget for the coming year. Several "
        "members raised concerns about the cost of the new library building. ";
  }
  const std::string text_path = write("text.txt", text);
  const std::string json_path = (dir_ / "ppl.json").string();
  const CliRun r = run_cli("eval --task perplexity --text " + text_path +
                           " --lengths 96 --prefix 48 --window 16 --modes full,test,streaming "
                           "--lazy-fractions 0.5 --json " +
                           json_path);
  ASSERT_EQ(r.code, 0) << r.output;
  std::ifstream in(json_path);
  const nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.output;
  ASSERT_EQ(doc["modes"].size(), 3u);
  for (const auto& mode : doc["modes"]) {
    const double ppl = mode["points"][0]["ppl"].get<double>();
    EXPECT_TRUE(std::isfinite(ppl)) << mode["mode"];
    EXPECT_GT(ppl, 1.0) << mode["mode"];
    EXPECT_EQ(mode["points"][0]["scored_tokens"].get<int>(), 48);
  }
  EXPECT_EQ(doc["modes"][2]["num_lazy_layers"].get<int>(), 30);  // streaming
  EXPECT_EQ(doc["modes"][1]["num_lazy_layers"].get<int>(), 15);  // test f=0.5
}

TEST_F(CliTest, BadInputsExitWithCode2) {
  const CliRun missing = run_cli("calibrate --prompts " + (dir_ / "nope.jsonl").string() +
                                 " --out " + (dir_ / "p.yaml").string());
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_NE(missing.output.find("cannot read"), std::string::npos) << missing.output;

  const CliRun mode = run_cli("eval --task perplexity --modes full,sideways");
  EXPECT_EQ(mode.code, 2) << mode.output;
  EXPECT_NE(mode.output.find("sideways"), std::string::npos) << mode.output;

  const CliRun fraction = run_cli("eval --task passkey --lazy-fractions 1.5");
  EXPECT_EQ(fraction.code, 2) << fraction.output;
  EXPECT_NE(fraction.output.find("1.5"), std::string::npos) << fraction.output;

  const std::string prompts = write("p.txt", "hello\n");
  const CliRun calib_fraction = run_cli("calibrate --prompts " + prompts + " --out " +
                                        (dir_ / "p.yaml").string() + " --lazy-fraction 1.5");
  EXPECT_EQ(calib_fraction.code, 2) << calib_fraction.output;
  EXPECT_NE(calib_fraction.output.find("lazy"), std::string::npos) << calib_fraction.output;

  const CliRun task = run_cli("eval --task summarize");
  EXPECT_EQ(task.code, 2) << task.output;
}

}  // namespace
