// Model-source flags through the real binary: dummy models (--load-format dummy --shape ...):
// `info` prints the capacity report of a named shape, `bench` runs one, `serve` serves one to a
// real HTTP client, `export` writes one as a GGUF file; --chat-template replaces the file's
// template; bad values of any of them are usage errors (exit 2) before anything loads.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support/cli_runner.h"
#include "tests/support/daemon_process.h"
#include "tests/support/http_test_client.h"

namespace lightserve::testing {
namespace {

constexpr const char* kTiny =
    "layers=2,hidden=64,heads=4,kv_heads=2,ffn=128,vocab=512,context=2048";

class CliDummyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kLightserveBinary)) GTEST_SKIP() << "no " << kLightserveBinary;
  }
};

TEST_F(CliDummyTest, InfoPrintsTheCapacityReportOfAShape) {
  const CliResult r = run_lightserve(
      "info --load-format dummy --shape smollm2-135m --kv-budget 1GiB --context 8192");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("dummy:smollm2-135m (Q4_0)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layers:          30"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("576 (ffn 1536)"), std::string::npos) << r.out;
  // The shape's capacity: the same arithmetic as a file of that shape.
  EXPECT_NE(r.out.find("at 8192 tokens:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hybrid sequences"), std::string::npos) << r.out;
}

TEST_F(CliDummyTest, BenchRunsADummyModel) {
  const CliResult r = run_lightserve(std::string("bench --load-format dummy --shape ") + kTiny +
                                     " --kv-budget 16MiB --num-prompts 4 --input-len 300"
                                     " --output-len 8 --quiet");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("output tokens/s:"), std::string::npos) << r.out;
}

TEST_F(CliDummyTest, BadLoadFlagsExitTwoNamingTheFlag) {
  const struct {
    std::string args;
    std::string message;
  } cases[] = {
      {"info --load-format onnx", "--load-format: unknown load format 'onnx'"},
      {"info --load-format dummy --shape llama-9b", "--shape: unknown shape 'llama-9b'"},
      {"bench --kv-budget 1MiB --load-format dummy --shape layers=2", "missing field 'hidden'"},
      {"generate -p hi --load-format dummy --dummy-type q6_k", "--dummy-type: unknown dummy"},
      {"serve --load-format dummy --shape llama-9b", "model.shape unknown shape 'llama-9b'"},
      {"generate -p hi --chat --chat-template vicuna",
       "--chat-template: 'vicuna' is neither a chat format"},
      {"serve --chat-template /nonexistent.jinja", "model.chat_template '/nonexistent.jinja'"},
  };
  for (const auto& c : cases) {
    const CliResult r = run_lightserve(c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("loading "), std::string::npos) << c.args << ": loaded first";
  }
}

// A Hugging Face folder that cannot load is exit 1 with the missing file named; the tiny generated
// folder loads.
TEST_F(CliDummyTest, HuggingFaceFoldersLoadOrNameWhatIsMissing) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("ls_hf_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const CliResult empty = run_lightserve("info --model " + dir.string());
  EXPECT_EQ(empty.code, 1) << empty.err;
  EXPECT_NE(empty.err.find("config.json"), std::string::npos) << empty.err;
  std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"]})";
  const CliResult no_tokenizer = run_lightserve("info --model " + dir.string());
  EXPECT_EQ(no_tokenizer.code, 1) << no_tokenizer.err;
  EXPECT_NE(no_tokenizer.err.find(dir.string()), std::string::npos) << no_tokenizer.err;
  std::filesystem::remove_all(dir);

  const CliResult tiny =
      run_lightserve(std::string("info --model ") + LIGHTSERVE_FIXTURE_DIR + "/hf_tiny_llama/bf16");
  ASSERT_EQ(tiny.code, 0) << tiny.err;
  EXPECT_NE(tiny.out.find("Hugging Face folder"), std::string::npos) << tiny.out;
}

// --chat-template replaces the file's template (by name here; a file works the same way).
TEST_F(CliDummyTest, ChatTemplateOverridesTheFilesTemplate) {
  const CliResult plain = run_lightserve("info --load-format dummy --shape " + std::string(kTiny));
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_NE(plain.out.find("chat template:   the model file has no tokenizer.chat_template"),
            std::string::npos)
      << plain.out;
  const CliResult named = run_lightserve("info --load-format dummy --shape " + std::string(kTiny) +
                                         " --chat-template llama2");
  ASSERT_EQ(named.code, 0) << named.err;
  EXPECT_NE(named.out.find("chat template:   llama2"), std::string::npos) << named.out;
}

// `export` writes the dummy model as a GGUF file that loads as a model file and generates what the
// dummy generates (the same weights); bad flags and paths are errors naming them.
TEST_F(CliDummyTest, ExportWritesTheDummyModelAsAGgufFile) {
  const std::string dir = ::testing::TempDir() + "cli_export." + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string out = dir + "/tiny.gguf";
  const std::string dummy = std::string("--load-format dummy --dummy-type f16 --shape ") + kTiny;
  const CliResult exported = run_lightserve("export " + dummy + " --threads 2 -q -o " + out);
  ASSERT_EQ(exported.code, 0) << exported.err;
  EXPECT_NE(exported.out.find("wrote " + out), std::string::npos) << exported.out;
  EXPECT_TRUE(exported.err.empty()) << exported.err;  // -q: no progress

  const CliResult info = run_lightserve("info --model " + out);
  ASSERT_EQ(info.code, 0) << info.err;
  EXPECT_NE(info.out.find("GGUF v3"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("F16×16"), std::string::npos) << info.out;  // 2 layers × 7 + 2
  const std::string greedy = " -p 'Hello, file' -n 12 -t 0 --ignore-eos -q";
  const CliResult from_file = run_lightserve("generate --model " + out + greedy);
  const CliResult from_dummy = run_lightserve("generate " + dummy + greedy);
  ASSERT_EQ(from_file.code, 0) << from_file.err;
  ASSERT_EQ(from_dummy.code, 0) << from_dummy.err;
  EXPECT_FALSE(from_file.out.empty());
  EXPECT_EQ(from_file.out, from_dummy.out);

  const CliResult no_output = run_lightserve("export " + dummy);
  EXPECT_EQ(no_output.code, 2);
  EXPECT_NE(no_output.err.find("--output"), std::string::npos) << no_output.err;
  const CliResult bad_dir = run_lightserve("export " + dummy + " -q -o " + dir + "/no/such/x.gguf");
  EXPECT_EQ(bad_dir.code, 1);
  EXPECT_NE(bad_dir.err.find(dir + "/no/such/x.gguf.partial"), std::string::npos) << bad_dir.err;
  std::filesystem::remove_all(dir);
}

TEST_F(CliDummyTest, ServeServesADummyModelToAnHttpClient) {
  DaemonProcess d = DaemonProcess::start(
      {"--load-format", "dummy", "--shape", kTiny, "--kv-budget", "16MiB", "--context", "512"});
  ASSERT_TRUE(d.ok()) << d.error();
  const std::string expected_id = std::string("dummy-") + kTiny;
  const HttpResponse models = HttpConnection(d.http_port()).request("GET", "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  EXPECT_EQ(models.json()["data"][0]["id"], expected_id) << models.body;

  const nlohmann::json body = {{"model", expected_id},
                               {"prompt", "Hello, dummy"},
                               {"max_tokens", 12},
                               {"ignore_eos", true},
                               {"temperature", 0}};
  const HttpResponse r =
      HttpConnection(d.http_port())
          .request("POST", "/v1/completions", body.dump(), {{"Content-Type", "application/json"}});
  ASSERT_EQ(r.status, 200) << r.body;
  const nlohmann::json j = r.json();
  EXPECT_EQ(j["usage"]["prompt_tokens"], 13) << r.body;  // BOS + one token per byte
  EXPECT_EQ(j["usage"]["completion_tokens"], 12) << r.body;
  EXPECT_EQ(d.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace lightserve::testing
