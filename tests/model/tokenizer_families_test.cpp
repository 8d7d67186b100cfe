// Tokenizers of other model families against llama.cpp: its vocabulary-only GGUF files
// (Llama-2 SentencePiece, Phi-3 SentencePiece, Llama-3 BPE, Qwen2 BPE) with llama.cpp's own test
// strings and expected ids (`ggml-vocab-*.gguf.inp/.out`, tokenized with add_special and
// parse_special off, as its test-tokenizer-0 does), and tests/golden/tokenizer_families.json:
// hundreds more strings (multilingual, code, whitespace runs, emoji, special tokens) tokenized by
// the pinned llama.cpp's llama-tokenize, parse_special on, BOS as the vocabulary asks
// (scripts/goldens/tokenizer_families_goldens.py).
// scripts/fetch_vocabs.sh puts the vocabulary files at models/vocab/ (scripts/test.sh runs it);
// without them the tests skip with a message.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "model/tokenizer.h"

namespace lightserve::model {
namespace {

using json = nlohmann::json;

std::string vocab_dir() {
  return std::string(LIGHTSERVE_SOURCE_DIR) + "/models/vocab";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct LoadedVocab {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Null (and the test skips) when scripts/fetch_vocabs.sh has not run.
const LoadedVocab* load_vocab(const std::string& name) {
  static std::map<std::string, LoadedVocab> cache;
  if (auto it = cache.find(name); it != cache.end()) return &it->second;
  const std::string path = vocab_dir() + "/ggml-vocab-" + name + ".gguf";
  if (!std::filesystem::exists(path)) return nullptr;
  LoadedVocab loaded;
  auto file = GgufFile::open(path);
  EXPECT_TRUE(file) << file.error().message;
  if (!file) return nullptr;
  loaded.file = std::move(file).value();
  auto tokenizer = Tokenizer::from_gguf(*loaded.file);
  EXPECT_TRUE(tokenizer) << name << ": " << tokenizer.error().message;
  if (!tokenizer) return nullptr;
  loaded.tokenizer = std::move(tokenizer).value();
  return &cache.emplace(name, std::move(loaded)).first->second;
}

// llama.cpp's test-tokenizer-0 format: inputs separated by "\n__ggml_vocab_test__\n", one line
// of space-separated ids per input.
std::vector<std::pair<std::string, std::vector<int32_t>>> llama_cpp_cases(const std::string& name) {
  const std::string raw = read_file(vocab_dir() + "/ggml-vocab-" + name + ".gguf.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(vocab_dir() + "/ggml-vocab-" + name + ".gguf.out");
  std::vector<std::pair<std::string, std::vector<int32_t>>> cases;
  size_t index = 0;
  for (std::string line; std::getline(out, line); ++index) {
    std::vector<int32_t> ids;
    std::istringstream words(line);
    for (int32_t id = 0; words >> id;) ids.push_back(id);
    if (index < inputs.size()) cases.emplace_back(inputs[index], std::move(ids));
  }
  EXPECT_EQ(index, inputs.size()) << name << ": .inp and .out disagree on the number of cases";
  return cases;
}

class TokenizerFamilyTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenizerFamilyTest, EncodesLlamaCppTestStringsAsLlamaCpp) {
  const LoadedVocab* vocab = load_vocab(GetParam());
  if (vocab == nullptr) GTEST_SKIP() << "models/vocab absent: run scripts/fetch_vocabs.sh";
  const auto cases = llama_cpp_cases(GetParam());
  ASSERT_GE(cases.size(), 30u);
  for (const auto& [text, want] : cases) {
    EXPECT_EQ(vocab->tokenizer->encode(text, /*add_bos=*/false, /*parse_special=*/false), want)
        << GetParam() << " on '" << text << "'";
  }
}

TEST_P(TokenizerFamilyTest, EncodesEveryGoldenStringAsLlamaTokenize) {
  const LoadedVocab* vocab = load_vocab(GetParam());
  if (vocab == nullptr) GTEST_SKIP() << "models/vocab absent: run scripts/fetch_vocabs.sh";
  std::ifstream in(std::string(LIGHTSERVE_GOLDEN_DIR) + "/tokenizer_families.json");
  ASSERT_TRUE(in) << "tests/golden/tokenizer_families.json is missing";
  const json golden = json::parse(in);
  const json& family = golden.at("vocabs").at(GetParam());
  EXPECT_EQ(vocab->tokenizer->vocab_size(), family.at("vocab_size").get<int32_t>());
  const auto& strings = golden.at("strings");
  const auto& cases = family.at("cases");
  ASSERT_EQ(cases.size(), strings.size());
  size_t checked = 0;
  for (const json& c : cases) {
    const std::string text = strings.at(c.at("string").get<size_t>()).get<std::string>();
    const bool special = c.at("parse_special").get<bool>();
    const auto want = c.at("ids").get<std::vector<int32_t>>();
    // llama-tokenize adds the model's BOS when the vocabulary asks for one.
    const auto got = vocab->tokenizer->encode(text, vocab->tokenizer->add_bos_token(), special);
    EXPECT_EQ(got, want) << GetParam() << " (parse_special " << special << ") on '" << text << "'";
    ++checked;
  }
  EXPECT_GE(checked, 250u);
}

// Decoding what we encoded gives the text back (valid UTF-8 input; no specials).
TEST_P(TokenizerFamilyTest, DecodeUndoesEncode) {
  const LoadedVocab* vocab = load_vocab(GetParam());
  if (vocab == nullptr) GTEST_SKIP() << "models/vocab absent: run scripts/fetch_vocabs.sh";
  for (const std::string text :
       {"Hello world", "  two leading spaces", "tab\there", "日本語のテキスト", "emoji 🦙🚀 ok",
        "line\nbreaks\n\n", "x = f(1, 2) -> [3]"}) {
    const auto ids = vocab->tokenizer->encode(text, false, false);
    EXPECT_EQ(vocab->tokenizer->decode(ids), text) << GetParam();
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, TokenizerFamilyTest,
                         ::testing::Values("llama-spm", "phi-3", "llama-bpe", "qwen2"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(SpmTokenizerTest, LlamaSpmFactsMatchLlamaCpp) {
  const LoadedVocab* vocab = load_vocab("llama-spm");
  if (vocab == nullptr) GTEST_SKIP() << "models/vocab absent: run scripts/fetch_vocabs.sh";
  const Tokenizer& tok = *vocab->tokenizer;
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.add_bos_token());
  EXPECT_TRUE(tok.is_end_of_generation(2));
  EXPECT_EQ(tok.token_bytes(0), "\xE2\x96\x85");  // <unk> renders as llama.cpp's U+2585
  EXPECT_EQ(tok.token_bytes(0, /*render_special=*/true), "<unk>");
  // Byte fallback: a character with no token of its own becomes its UTF-8 bytes' tokens.
  const auto ids = tok.encode("\xF0\x9F\xA6\x99", false, false);  // 🦙
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(tok.decode(ids), "\xF0\x9F\xA6\x99");
  // Special tokens are split out only with parse_special, and a space prefix follows them.
  EXPECT_EQ(tok.encode("<s>Hi", false, true).front(), 1);
  EXPECT_NE(tok.encode("<s>Hi", false, false).front(), 1);
}

}  // namespace
}  // namespace lightserve::model
