// `lightserve serve` refuses settings the model makes impossible as usage errors: exit 2, a
// message naming the key, before any weight is loaded; a file that cannot load is exit 1.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/cli_runner.h"

namespace lightserve::testing {
namespace {

const std::string kModel = LIGHTSERVE_TEST_MODEL;

class ServeStartupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "no model at " << kModel;
    if (!std::filesystem::exists(kLightserveBinary)) GTEST_SKIP() << "no " << kLightserveBinary;
  }
  static CliResult serve(const std::string& args) {
    return run_lightserve("serve --model " + kModel + " --http-port 0 --grpc-port 0 " + args);
  }
};

TEST_F(ServeStartupTest, SettingsTheModelCannotHoldExitTwoBeforeLoading) {
  struct Case {
    const char* args;
    const char* message;
  };
  const Case cases[] = {
      {"--context 999999999", "engine.context 999999999 exceeds the model's training context"},
      {"--kv-budget 64KB", "engine.kv_budget"},
      {"--lazy-fraction 0.5 --sink 4 --window 1020 --context 8192 --kv-budget 1MB",
       "engine.kv_budget"},
  };
  for (const Case& c : cases) {
    const CliResult r = serve(c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("loading "), std::string::npos) << c.args << ": loaded weights first";
  }
}

TEST_F(ServeStartupTest, AFileThatDoesNotLoadIsExitOne) {
  const std::filesystem::path bad =
      std::filesystem::temp_directory_path() / "lightserve_startup_not_a_model.gguf";
  std::ofstream(bad) << "not a gguf file";
  const CliResult r =
      run_lightserve("serve --model " + bad.string() + " --http-port 0 --grpc-port 0");
  std::filesystem::remove(bad);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(bad.filename().string()), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lightserve::testing
