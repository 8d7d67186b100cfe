// Hugging Face folders against the reference writers (scripts/goldens/hf_goldens.py):
// - tokenizer.json files of each supported form, trained by the `tokenizers` package, give its
//   ids on a few hundred strings (multilingual, code, whitespace runs, emoji, special tokens);
// - tiny random models (f32, and bf16; generated into the build tree by
//   tests/fixtures/make_test_fixtures.cpp, read by transformers as they are) load through
//   LlamaModel::load from their folders and give transformers' logits, argmax and greedy tokens
//   (where transformers' own top-2 gap exceeds the tolerance): LlamaForCausalLM (bf16 sharded),
//   Qwen2ForCausalLM (Q/K/V biases, NEOX RoPE, tied embeddings) and LlamaForCausalLM with
//   Llama-3.1's rope_scaling (scripts/goldens/hf_arch_goldens.py); the Qwen2 also as a GGUF file
//   laid out as the `gguf` package writes it (scripts/goldens/hf_arch_gguf.py checks it), against
//   the same logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/hf_tokenizer.h"
#include "model/llama_model.h"

namespace lightserve::model {
namespace {

using json = nlohmann::json;
const std::string kGolden = LIGHTSERVE_GOLDEN_DIR;
const std::string kFixtures = LIGHTSERVE_FIXTURE_DIR;

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(HfGolden, TokenizersMatchTheTokenizersPackage) {
  const json golden = json::parse(read(kGolden + "/hf_tokenizers.json"));
  const auto& strings = golden["strings"];
  ASSERT_GT(strings.size(), 300u);
  for (const auto& [family, expected] : golden["families"].items()) {
    const std::string folder = kGolden + "/hf_tokenizers/" + family;
    const std::string tokenizer_json = read(folder + "/tokenizer.json");
    const std::string tokenizer_config = read(folder + "/tokenizer_config.json");
    HfTokenizerSources sources;
    sources.folder = folder;
    sources.tokenizer_json = tokenizer_json;
    sources.tokenizer_config = tokenizer_config;
    auto hf = read_hf_tokenizer(sources);
    ASSERT_TRUE(hf.ok()) << family << ": " << hf.error().message;
    auto tokenizer = Tokenizer::from_spec(hf.value().spec);
    ASSERT_TRUE(tokenizer.ok()) << family << ": " << tokenizer.error().message;
    EXPECT_EQ(tokenizer.value()->vocab_size(), expected["vocab_size"].get<int32_t>()) << family;
    int mismatches = 0;
    for (size_t i = 0; i < strings.size(); ++i) {
      const std::string text = strings[i].get<std::string>();
      const auto want = expected["ids"][i].get<std::vector<int32_t>>();
      const auto got = tokenizer.value()->encode(text, /*add_bos=*/false);
      if (got != want && ++mismatches <= 5) {
        ADD_FAILURE() << family << ": string " << i << " " << json(text).dump() << "\n  want "
                      << json(want).dump() << "\n  got  " << json(got).dump();
      }
    }
    EXPECT_EQ(mismatches, 0) << family << ": of " << strings.size() << " strings";
  }
}

struct GoldenCase {
  const char* golden;   // tests/golden/<golden>.json
  const char* variant;  // its "variants" entry: f32 or bf16
  const char* model;    // the folder or file, under the generated fixtures
};

void PrintTo(const GoldenCase& c, std::ostream* os) {
  *os << c.model;
}

class HfTinyModel : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(HfTinyModel, MatchesTransformers) {
  const GoldenCase& param = GetParam();
  const std::string variant = param.variant;
  const json golden = json::parse(read(kGolden + "/" + param.golden + ".json"));
  std::string why;
  auto backend = kernels::make_backend("cpu", 1, &why);
  ASSERT_NE(backend, nullptr) << why;
  LoadOptions options;
  options.llama_cpp_attention = false;  // f32 attention, as transformers on the CPU
  auto loaded = LlamaModel::load(ModelSource(kFixtures + "/" + param.model), *backend, options);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  LlamaModel& model = *loaded.value();
  const int32_t vocab = model.config().vocab_size;
  // Our KV cache is f16 (about 1e-3 here in either variant); bf16 weights may also round
  // activations where transformers (widened weights) does not.
  const float tolerance = variant == "f32" ? 5e-3f : 2e-2f;

  const auto& prompts = golden["prompts"];
  const auto& runs = golden["variants"][variant];
  ASSERT_EQ(runs.size(), prompts.size());
  for (size_t p = 0; p < runs.size(); ++p) {
    const auto& run = runs[p];
    const auto ids = run["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(model.tokenizer().encode(prompts[p].get<std::string>()), ids) << p;

    const auto greedy = run["greedy"].get<std::vector<int32_t>>();
    SequenceCache cache(model.config(), static_cast<int32_t>(ids.size() + greedy.size() + 1));
    BatchEntry entry;
    entry.cache = &cache;
    entry.tokens = ids;
    entry.all_logits = true;
    std::vector<float> logits;
    ASSERT_TRUE(model.forward({&entry, 1}, logits).ok());
    ASSERT_EQ(logits.size(), ids.size() * static_cast<size_t>(vocab));
    const auto want_last = run["last_logits"].get<std::vector<float>>();
    const float* last = logits.data() + (ids.size() - 1) * static_cast<size_t>(vocab);
    float max_error = 0;
    for (int32_t v = 0; v < vocab; ++v)
      max_error = std::max(max_error, std::abs(last[v] - want_last[v]));
    EXPECT_LT(max_error, tolerance) << param.model << " prompt " << p;
    RecordProperty("max_logit_error_" + std::to_string(p), std::to_string(max_error));
    std::printf("[ golden   ] %s prompt %zu (%zu tokens): max |logit error| %.2e\n", param.model, p,
                ids.size(), static_cast<double>(max_error));
    const auto argmax = run["argmax"].get<std::vector<int32_t>>();
    const auto gaps = run["top2_gap"].get<std::vector<float>>();
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* row = logits.data() + i * static_cast<size_t>(vocab);
      const auto got = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      if (gaps[i] > 2 * tolerance) {
        EXPECT_EQ(got, argmax[i]) << param.model << " " << p << "@" << i;
      }
    }

    // Greedy continuation, compared while transformers' choice is clear.
    const auto greedy_gaps = run["greedy_gaps"].get<std::vector<float>>();
    int32_t next = argmax.back();
    for (size_t step = 0; step < greedy.size(); ++step) {
      if (greedy_gaps[step] <= 2 * tolerance) break;
      ASSERT_EQ(next, greedy[step]) << param.model << " prompt " << p << " step " << step;
      BatchEntry decode;
      decode.cache = &cache;
      decode.tokens = {&next, 1};
      ASSERT_TRUE(model.forward({&decode, 1}, logits).ok());
      next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, HfTinyModel,
    ::testing::Values(GoldenCase{"hf_tiny_llama", "f32", "hf_tiny_llama/f32"},
                      GoldenCase{"hf_tiny_llama", "bf16", "hf_tiny_llama/bf16"},
                      GoldenCase{"hf_tiny_qwen2", "f32", "hf_tiny_qwen2/f32"},
                      GoldenCase{"hf_tiny_qwen2", "bf16", "hf_tiny_qwen2/bf16"},
                      GoldenCase{"hf_tiny_qwen2", "f32", "hf_tiny_qwen2.gguf"},
                      GoldenCase{"hf_tiny_llama31", "f32", "hf_tiny_llama31/f32"},
                      GoldenCase{"hf_tiny_llama31", "bf16", "hf_tiny_llama31/bf16"}),
    [](const ::testing::TestParamInfo<GoldenCase>& info) {
      std::string name = info.param.model;
      for (char& c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      }
      return name;
    });

}  // namespace
}  // namespace lightserve::model
