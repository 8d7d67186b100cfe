// Hugging Face folders against the reference writers (scripts/goldens/hf_goldens.py):
// - tokenizer.json files of each supported form, trained by the `tokenizers` package, give its
//   ids on a few hundred strings (multilingual, code, whitespace runs, emoji, special tokens);
// - a tiny random LlamaForCausalLM saved by `transformers` (f32, and bf16 sharded) loads through
//   LlamaModel::load from its folder and gives transformers' logits, argmax and greedy tokens
//   (where transformers' own top-2 gap exceeds the tolerance).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

class HfTinyLlama : public ::testing::TestWithParam<const char*> {};

TEST_P(HfTinyLlama, MatchesTransformers) {
  const std::string variant = GetParam();
  const json golden = json::parse(read(kGolden + "/hf_tiny_llama.json"));
  std::string why;
  auto backend = kernels::make_backend("cpu", 1, &why);
  ASSERT_NE(backend, nullptr) << why;
  LoadOptions options;
  options.llama_cpp_attention = false;  // f32 attention, as transformers on the CPU
  auto loaded =
      LlamaModel::load(ModelSource(kGolden + "/hf_tiny_llama/" + variant), *backend, options);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  LlamaModel& model = *loaded.value();
  const int32_t vocab = model.config().vocab_size;
  // Our KV cache is f16 (about 1e-3 here in either variant); bf16 weights may also round
  // activations where transformers (widened weights) does not.
  const float tolerance = variant == "f32" ? 5e-3f : 2e-2f;

  const auto& prompts = golden["prompts"];
  const auto& runs = golden["variants"][variant];
  for (size_t p = 0; p < runs.size(); ++p) {
    const auto& run = runs[p];
    const auto ids = run["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(model.tokenizer().encode(prompts[p].get<std::string>()), ids) << p;

    SequenceCache cache(model.config(), 64);
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
    EXPECT_LT(max_error, tolerance) << variant << " prompt " << p;
    RecordProperty("max_logit_error_" + std::to_string(p), std::to_string(max_error));
    const auto argmax = run["argmax"].get<std::vector<int32_t>>();
    const auto gaps = run["top2_gap"].get<std::vector<float>>();
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* row = logits.data() + i * static_cast<size_t>(vocab);
      const auto got = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      if (gaps[i] > 2 * tolerance) {
        EXPECT_EQ(got, argmax[i]) << variant << " " << p << "@" << i;
      }
    }

    // Greedy continuation, compared while transformers' choice is clear.
    const auto greedy = run["greedy"].get<std::vector<int32_t>>();
    const auto greedy_gaps = run["greedy_gaps"].get<std::vector<float>>();
    int32_t next = argmax.back();
    for (size_t step = 0; step < greedy.size(); ++step) {
      if (greedy_gaps[step] <= 2 * tolerance) break;
      ASSERT_EQ(next, greedy[step]) << variant << " prompt " << p << " step " << step;
      BatchEntry decode;
      decode.cache = &cache;
      decode.tokens = {&next, 1};
      ASSERT_TRUE(model.forward({&decode, 1}, logits).ok());
      next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, HfTinyLlama, ::testing::Values("f32", "bf16"));

}  // namespace
}  // namespace lightserve::model
