// LightTransferOptions::resolve: what the user leaves unset comes from the plan calibrated for the
// model (found by its name in the plan folder), the start-up line says which fraction and score
// run and why, and a fraction above the validated one is served with a warning.
#include "serving/lighttransfer_options.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace lightserve::serving {
namespace {

namespace fs = std::filesystem;

class LightTransferOptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("lt_options_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    ::setenv("LIGHTSERVE_PLAN_DIR", dir_.c_str(), 1);
    config_.name = "Tiny Model";
    config_.num_layers = 4;
  }
  void TearDown() override {
    ::unsetenv("LIGHTSERVE_PLAN_DIR");
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // A validated plan for config_: head-min at f = 0.5; head-min f=0.75 measured outside the bound.
  std::string write_plan(const std::string& model_name) {
    model::LtPlan plan;
    plan.model = model_name;
    plan.num_layers = 4;
    plan.ranking = {3, 2, 1, 0};
    plan.score = model::LazyScore::kHeadMin;
    plan.validated_fraction = 0.5;
    plan.lazy_fraction = 0.5;
    plan.sink = 4;
    plan.window = 1020;
    plan.quality.push_back({"full", "", 0.0, {4096}, {100.0}, 10.0, false});
    plan.quality.push_back({"head-min f=0.50", "head-min", 0.5, {4096}, {100.0}, 10.1, true});
    plan.quality.push_back({"head-min f=0.75", "head-min", 0.75, {4096}, {40.0}, 11.0, false});
    const std::string path = (dir_ / "tiny.yaml").string();
    EXPECT_TRUE(plan.save(path).ok());
    return path;
  }
  fs::path dir_;
  model::LlamaConfig config_;
};

TEST_F(LightTransferOptionsTest, WithoutAPlanThePaperDefaultsRunAndSaySoUnvalidated) {
  write_plan("Another Model");  // not this model's
  auto r = LightTransferOptions{}.resolve(config_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->settings.lazy_fraction, 0.5);
  EXPECT_EQ(r->settings.score, model::LazyScore::kMean);
  EXPECT_FALSE(r->settings.plan.has_value());
  EXPECT_NE(r->summary.find("not validated"), std::string::npos) << r->summary;
  EXPECT_TRUE(r->warning.empty());
}

TEST_F(LightTransferOptionsTest, TheModelsPlanSuppliesTheValidatedFractionAndScore) {
  const std::string path = write_plan(config_.name);
  auto r = LightTransferOptions{}.resolve(config_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->plan_path, path);
  EXPECT_EQ(r->settings.lazy_fraction, 0.5);
  EXPECT_EQ(r->settings.score, model::LazyScore::kHeadMin);
  EXPECT_EQ(r->settings.mode, model::LtMode::kOnline);
  EXPECT_NE(r->summary.find("score head-min"), std::string::npos) << r->summary;
  EXPECT_NE(r->summary.find("validated by " + path), std::string::npos) << r->summary;
  EXPECT_TRUE(r->warning.empty()) << r->warning;
}

TEST_F(LightTransferOptionsTest, AFractionAboveTheValidatedOneWarnsWithItsMeasurement) {
  write_plan(config_.name);
  LightTransferOptions o;
  o.lazy_fraction = 0.75;
  auto r = o.resolve(config_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->settings.lazy_fraction, 0.75);
  EXPECT_NE(r->warning.find("not the validated head-min f=0.50"), std::string::npos) << r->warning;
  EXPECT_NE(r->warning.find("passkey 40%"), std::string::npos) << r->warning;
  EXPECT_NE(r->warning.find("outside the bound"), std::string::npos) << r->warning;
  // At or below the validated fraction with its score: no warning.
  o.lazy_fraction = 0.25;
  r = o.resolve(config_);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->warning.empty()) << r->warning;
  // Another score than the validated one is not validated either.
  o.lazy_fraction = 0.5;
  o.score = "mean";
  r = o.resolve(config_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->settings.score, model::LazyScore::kMean);
  EXPECT_FALSE(r->warning.empty());
  // A window the plan was not validated at is not validated either.
  o.score = "";
  o.window = 252;
  r = o.resolve(config_);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->warning.find("window 252"), std::string::npos) << r->warning;
}

TEST_F(LightTransferOptionsTest, PlanNoneAndBadValuesAreHonoured) {
  write_plan(config_.name);
  LightTransferOptions o;
  o.plan = "none";
  auto r = o.resolve(config_);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->settings.plan.has_value());
  EXPECT_EQ(r->settings.lazy_fraction, 0.5);
  o.score = "max";
  r = o.resolve(config_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("'max'"), std::string::npos);
  o.score = "";
  o.lazy_fraction = -0.5;  // only the unset marker means "from the plan"
  r = o.resolve(config_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("lazy_fraction"), std::string::npos);
}

}  // namespace
}  // namespace lightserve::serving
