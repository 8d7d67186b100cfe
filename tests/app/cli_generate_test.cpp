// `lightserve generate` and `lightserve info` run as a user runs them: greedy output equal to the
// library's, reproducible sampling, and broken model files or options failing with one clear
// error and the documented exit code.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/generate.h"
#include "model/llama_model.h"
#include "tests/support/cli_runner.h"

namespace {

namespace fs = std::filesystem;

const std::string& kBinary = lightserve::testing::kLightserveBinary;
const std::string kModel = LIGHTSERVE_TEST_MODEL;

using lightserve::testing::CliResult;

CliResult run(const std::string& args) {
  return lightserve::testing::run_lightserve(args);
}

class CliGenerate : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel)) GTEST_SKIP() << "model file absent: " << kModel;
    if (!fs::exists(kBinary)) GTEST_SKIP() << "lightserve binary absent: " << kBinary;
  }
};

TEST_F(CliGenerate, GreedyOutputEqualsTheLibrary) {
  const std::string prompt = "The capital of France is";
  // On the CPU, as the library run below (LIGHTSERVE_DEVICE may name another default).
  const CliResult r = run("generate -q --device cpu --model " + kModel +
                          " --temperature 0 -n 24 --lt-mode full --prompt '" + prompt + "'");
  ASSERT_EQ(r.code, 0) << r.err;

  auto backend = lightserve::kernels::make_cpu_backend(0);
  auto model = std::move(lightserve::model::LlamaModel::load(kModel, *backend)).value();
  const auto ids = model->tokenizer().encode(prompt, false, true);
  lightserve::model::SequenceCache cache(model->config(), static_cast<int32_t>(ids.size()) + 24);
  lightserve::model::GenerateParams params;
  params.max_tokens = 24;
  params.sampling.temperature = 0;
  auto result = lightserve::model::generate(*model, cache, ids, params);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(r.out, model->tokenizer().decode(result.value().tokens) + "\n");
}

TEST_F(CliGenerate, SameSeedSameOutput) {
  const std::string args =
      "generate -q --model " + kModel + " -n 24 --temperature 0.9 --prompt 'Once upon a time'";
  const CliResult a = run(args + " --seed 7");
  const CliResult b = run(args + " --seed 7");
  const CliResult c = run(args + " --seed 8");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST_F(CliGenerate, BrokenModelFilesGiveOneClearErrorAndExit1) {
  const fs::path dir =
      fs::temp_directory_path() / ("lightserve_badmodel_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ifstream in(kModel, std::ios::binary);
  std::vector<char> head(1 << 20);
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  const fs::path truncated = dir / "truncated.gguf";
  std::ofstream(truncated, std::ios::binary)
      .write(head.data(), static_cast<std::streamsize>(head.size()));
  const fs::path magic = dir / "magic.gguf";
  head[0] = 'X';
  std::ofstream(magic, std::ios::binary).write(head.data(), 4096);
  for (const auto& [file, phrase] : std::vector<std::pair<fs::path, std::string>>{
           {truncated, "truncated"}, {magic, "GGUF"}, {dir / "absent.gguf", "absent.gguf"}}) {
    for (const std::string cmd : {"info", "generate --prompt hi"}) {
      const CliResult r = run(cmd + " --model " + file.string());
      EXPECT_EQ(r.code, 1) << cmd << " " << file;
      EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
      EXPECT_NE(r.err.find(file.filename().string()), std::string::npos) << r.err;
      EXPECT_NE(r.err.find(phrase), std::string::npos) << r.err;
    }
  }
  fs::remove_all(dir);
}

TEST_F(CliGenerate, InvalidOptionsExit2) {
  for (const std::string args :
       {"--temperature -1", "--top-p 0", "--lt-mode bogus", "--lazy-fraction 2", "--window 0"}) {
    const CliResult r = run("generate --model " + kModel + " --prompt hi " + args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << args;
  }
}

TEST_F(CliGenerate, OptionsTheParserRefusesExit2Too) {
  struct Case {
    std::string args, message;
  };
  const Case cases[] = {
      {"serve --bogus-flag", "--bogus-flag"}, {"generate --threads abc --prompt hi", "--threads"},
      {"generate --prompt", "--prompt"},      {"", "subcommand"},
      {"nosuchcommand", "subcommand"},
  };
  for (const Case& c : cases) {
    const CliResult r = run(c.args);
    EXPECT_EQ(r.code, 2) << c.args << ": " << r.err;
    EXPECT_NE((r.err + r.out).find(c.message), std::string::npos) << c.args << ": " << r.err;
  }
  EXPECT_EQ(run("--help").code, 0);
  EXPECT_EQ(run("serve --help").code, 0);
  EXPECT_EQ(run("--version").code, 0);
}

TEST_F(CliGenerate, AnUnusableDeviceExits1WithTheReason) {
  for (const auto& [device, phrase] : {std::pair{"gpu", "is not cpu, cuda or cuda:N"},
                                       {"cuda:1x", "is not cpu, cuda or cuda:N"},
                                       {"cuda:999", "device cuda:999: "}}) {
    const CliResult r =
        run(std::string("generate --model ") + kModel + " --prompt hi --device " + device);
    EXPECT_EQ(r.code, 1) << device << ": " << r.err;
    EXPECT_NE(r.err.find(phrase), std::string::npos) << device << ": " << r.err;
  }
}

}  // namespace
