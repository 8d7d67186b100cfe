// Tokenizer, StreamDecoder and ChatTemplate: goldens from llama.cpp on the default model
// (tests/golden/tokenizer.json, written by scripts/goldens/tokenizer_goldens.py), properties
// (round trips, streaming, garbage input) and clear errors for bad tokenizer data.
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "model/gguf.h"
#include "tests/support/gguf_writer.h"

namespace lightserve::model {
namespace {

using gguf_testing::GgufWriter;
using json = nlohmann::json;

std::string golden_path() {
  return std::string(LIGHTSERVE_GOLDEN_DIR) + "/tokenizer.json";
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<uint8_t>(s[i]);
    size_t length = lead < 0x80                    ? 1
                    : lead >= 0xC2 && lead <= 0xDF ? 2
                    : lead >= 0xE0 && lead <= 0xEF ? 3
                    : lead >= 0xF0 && lead <= 0xF4 ? 4
                                                   : 0;
    if (length == 0 || i + length > s.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    const auto second = static_cast<uint8_t>(length > 1 ? s[i + 1] : 0x80);
    if ((lead == 0xE0 && second < 0xA0) || (lead == 0xED && second > 0x9F) ||
        (lead == 0xF0 && second < 0x90) || (lead == 0xF4 && second > 0x8F)) {
      return false;
    }
    i += length;
  }
  return true;
}

// The vocabulary string of a single byte: GPT-2's byte alphabet, built here independently.
std::string byte_token_text(uint8_t byte) {
  uint32_t code_point = 0x100;
  for (int b = 0; b <= byte; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    if (b == byte) {
      if (printable) code_point = byte;
    } else if (!printable) {
      ++code_point;
    }
  }
  if (code_point < 0x80) return std::string(1, static_cast<char>(code_point));
  return {static_cast<char>(0xC0 | (code_point >> 6)),
          static_cast<char>(0x80 | (code_point & 0x3F))};
}

std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

// The default model and the goldens, loaded once for the whole suite.
class SmolLmTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = gguf_testing::test_model_path();
    if (!std::ifstream(path).good()) return;
    auto file = GgufFile::open(path);
    ASSERT_TRUE(file.ok()) << file.error().message;
    file_ = std::move(file).value().release();
    auto tokenizer = Tokenizer::from_gguf(*file_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
    tokenizer_ = std::move(tokenizer).value().release();
    std::ifstream in(golden_path());
    ASSERT_TRUE(in.good()) << "missing golden file " << golden_path();
    golden_ = new json(json::parse(in));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete file_;
    delete golden_;
    tokenizer_ = nullptr;
    file_ = nullptr;
    golden_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      GTEST_SKIP() << "default model not found at " << gguf_testing::test_model_path()
                   << " (set LIGHTSERVE_TEST_MODEL or run scripts/fetch_model.sh)";
    }
  }
  static const Tokenizer& tok() { return *tokenizer_; }
  static const json& golden() { return *golden_; }

  static GgufFile* file_;
  static Tokenizer* tokenizer_;
  static json* golden_;
};
GgufFile* SmolLmTokenizerTest::file_ = nullptr;
Tokenizer* SmolLmTokenizerTest::tokenizer_ = nullptr;
json* SmolLmTokenizerTest::golden_ = nullptr;

TEST_F(SmolLmTokenizerTest, VocabularyFactsMatchLlamaCpp) {
  EXPECT_EQ(tok().vocab_size(), golden()["vocab_size"].get<int32_t>());
  EXPECT_EQ(tok().bos_id(), golden()["bos_id"].get<int32_t>());
  EXPECT_EQ(tok().eos_id(), golden()["eos_id"].get<int32_t>());
  EXPECT_EQ(tok().add_bos_token(), golden()["add_bos"].get<bool>());
  std::vector<int32_t> eog;
  std::vector<int32_t> control;
  for (int32_t id = 0; id < tok().vocab_size(); ++id) {
    if (tok().is_end_of_generation(id)) eog.push_back(id);
    if (tok().is_control(id)) control.push_back(id);
  }
  EXPECT_EQ(eog, golden()["end_of_generation"].get<std::vector<int32_t>>());
  EXPECT_EQ(control, golden()["control"].get<std::vector<int32_t>>());
  EXPECT_EQ(tok().find_token("<|im_end|>"), std::optional<int32_t>(2));
  EXPECT_EQ(tok().token_text(216), "\xC4\xA0");  // "Ġ": a lone space
  EXPECT_EQ(tok().find_token("no such token"), std::nullopt);
}

TEST_F(SmolLmTokenizerTest, EncodesEveryGoldenStringExactlyAsLlamaCpp) {
  const auto& cases = golden()["cases"];
  ASSERT_GE(cases.size(), 40u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    const auto ids = tok().encode(text, /*add_bos=*/false, /*parse_special=*/true);
    EXPECT_EQ(ids, expected) << "text: \"" << text << "\"\n ours:      " << ids_to_string(ids)
                             << "\n llama.cpp: " << ids_to_string(expected);
    if (c.contains("ids_no_special")) {
      const auto expected_plain = c["ids_no_special"].get<std::vector<int32_t>>();
      EXPECT_EQ(tok().encode(text, false, /*parse_special=*/false), expected_plain)
          << "parse_special=false, text: \"" << text << "\"";
    }
  }
}

TEST_F(SmolLmTokenizerTest, AddsBosOnlyWhenAsked) {
  EXPECT_EQ(tok().encode("Hello world", true), (std::vector<int32_t>{1, 19556, 905}));
  EXPECT_EQ(tok().encode("Hello world", false), (std::vector<int32_t>{19556, 905}));
}

TEST_F(SmolLmTokenizerTest, DecodesTokensToLlamaCppPieces) {
  for (const auto& c : golden()["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const auto& pieces = c["pieces"];
    ASSERT_EQ(pieces.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(tok().token_bytes(ids[i]), from_hex(pieces[i].get<std::string>()))
          << "token " << ids[i] << " in \"" << c["text"].get<std::string>() << "\"";
    }
    EXPECT_EQ(tok().decode(ids, /*render_special=*/true),
              c["detokenized_special"].get<std::string>());
  }
}

TEST_F(SmolLmTokenizerTest, RoundTripsValidUtf8) {
  for (const auto& c : golden()["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok().decode(tok().encode(text, false, true), true), text);
    EXPECT_EQ(tok().decode(tok().encode(text, false, false), false), text);
  }
  // Control tokens vanish unless rendered.
  EXPECT_EQ(tok().decode(tok().encode("<|im_start|>user\nhi<|im_end|>")), "user\nhi");
}

TEST_F(SmolLmTokenizerTest, StreamDecoderEmitsOnlyWholeCharacters) {
  for (const auto& c : golden()["cases"]) {
    const std::string text = c["text"];
    StreamDecoder stream(tok(), /*render_special=*/true);
    std::string joined;
    for (int32_t id : tok().encode(text)) {
      const std::string part = stream.push(id);
      EXPECT_TRUE(is_valid_utf8(part)) << "partial UTF-8 emitted for \"" << text << "\"";
      joined += part;
    }
    joined += stream.flush();
    EXPECT_EQ(joined, text);
  }
}

TEST_F(SmolLmTokenizerTest, StreamDecoderHoldsBackSplitCharacters) {
  // One emoji split over byte tokens: nothing until the last byte arrives.
  const std::string emoji = "\xF0\x9F\x98\x80";
  std::vector<int32_t> byte_ids;
  for (char byte : emoji) {
    const auto id = tok().find_token(byte_token_text(static_cast<uint8_t>(byte)));
    ASSERT_TRUE(id.has_value());
    byte_ids.push_back(*id);
  }
  StreamDecoder stream(tok());
  EXPECT_EQ(stream.push(byte_ids[0]), "");
  EXPECT_EQ(stream.push(byte_ids[1]), "");
  EXPECT_EQ(stream.push(byte_ids[2]), "");
  EXPECT_EQ(stream.push(byte_ids[3]), emoji);
  // A sequence cut short is replaced at flush; a broken one right away.
  EXPECT_EQ(stream.push(byte_ids[0]), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.push(byte_ids[0]), "");
  EXPECT_EQ(stream.push(tok().encode("a")[0]),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(stream.flush(), "");
}

TEST_F(SmolLmTokenizerTest, InvalidUtf8IsTokenizedAsLlamaCppDoes) {
  // Each byte that starts no complete sequence becomes U+FFFD; overlongs are re-encoded.
  const auto& cases = golden()["byte_cases"];
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const std::string bytes = from_hex(c["hex"].get<std::string>());
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    const auto ids = tok().encode(bytes);
    EXPECT_EQ(ids, expected) << "bytes " << c["hex"].get<std::string>()
                             << "\n ours:      " << ids_to_string(ids)
                             << "\n llama.cpp: " << ids_to_string(expected);
    EXPECT_EQ(tok().decode(ids), from_hex(c["detokenized"].get<std::string>()));
  }
  // Above U+10FFFF (llama.cpp throws here): the lead byte is replaced.
  EXPECT_EQ(tok().decode(tok().encode("\xF4\x90\x80\x80")),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  // Out-of-range ids decode to nothing rather than crash.
  EXPECT_EQ(tok().decode(std::vector<int32_t>{-5, 1 << 30}), "");
}

TEST_F(SmolLmTokenizerTest, RandomBytesNeverCrashAndRandomTextRoundTrips) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 200);
  for (int round = 0; round < 300; ++round) {
    std::string text(static_cast<size_t>(length(rng)), '\0');
    for (auto& ch : text) ch = static_cast<char>(byte(rng));
    const bool special = round % 2 == 0;
    // Each input byte comes back as at most U+FFFD (3 bytes).
    EXPECT_LE(tok().decode(tok().encode(text, false, special), special).size(), 3 * text.size());
    StreamDecoder stream(tok());
    std::string joined;
    for (int32_t id : tok().encode(text, false, special)) joined += stream.push(id);
    joined += stream.flush();
    EXPECT_TRUE(is_valid_utf8(joined));
  }
  // Random valid UTF-8 from many scripts round-trips exactly. (Bytes 04 06 13 14 16 1d and the
  // lead bytes F1 F2 of planes 4-11 have no token in this vocabulary: like llama.cpp we drop
  // them, so those are left out.)
  const std::vector<std::pair<uint32_t, uint32_t>> ranges = {
      {0x20, 0x7E},     {0x09, 0x0D},     {0xA0, 0x24F},    {0x370, 0x4FF},     {0x600, 0x6FF},
      {0x3040, 0x30FF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}, {0x1F300, 0x1FAFF}, {0x2000, 0x206F}};
  std::uniform_int_distribution<size_t> pick_range(0, ranges.size() - 1);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const int count = length(rng) / 4;
    for (int i = 0; i < count; ++i) {
      const auto [low, high] = ranges[pick_range(rng)];
      const uint32_t cp = std::uniform_int_distribution<uint32_t>(low, high)(rng);
      if (cp < 0x80) {
        text.push_back(static_cast<char>(cp));
      } else if (cp < 0x800) {
        text += {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
      } else if (cp < 0x10000) {
        text += {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                 static_cast<char>(0x80 | (cp & 0x3F))};
      } else {
        text +=
            {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
             static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
      }
    }
    ASSERT_TRUE(is_valid_utf8(text));
    EXPECT_EQ(tok().decode(tok().encode(text, false, false)), text);
  }
}

TEST_F(SmolLmTokenizerTest, EncodesTenThousandWordsQuickly) {
  std::string text;
  const char* words[] = {"The",   "tokenizer", "handles", "numbers", "like",   "12345",     "and",
                         "naïve", "café",      "text,",   "code();", "日本語", "quickly.\n"};
  for (int i = 0; i < 10000; ++i) text += std::string(words[i % 13]) + " ";
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok().encode(text);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("encoded 10,000 words (%zu bytes, %zu tokens) in %.2f ms\n", text.size(), ids.size(),
              ms);
  EXPECT_EQ(tok().decode(ids), text);
  EXPECT_LT(ms, 500.0);  // target is well under 50 ms in Release; loose for sanitizer builds
}

TEST_F(SmolLmTokenizerTest, ChatTemplateRendersLikeTheJinjaTemplate) {
  auto chat = ChatTemplate::from_gguf(*file_, tok());
  ASSERT_TRUE(chat.ok()) << chat.error().message;
  EXPECT_EQ(chat->name(), "chatml");
  EXPECT_EQ(chat->default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  for (const auto& c : golden()["chats"]) {
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    EXPECT_EQ(chat->render(messages, c["add_generation_prompt"].get<bool>()).value(),
              c["rendered"].get<std::string>());
  }
}

// ---- Tokenizers built from small in-memory files ----

// A GPT-2 style vocabulary: the 256 byte characters, then "ab", "abc", "Ġa" and two specials.
GgufWriter tiny_tokenizer_file() {
  std::vector<std::string> tokens;  // token id = byte for the first 256
  for (int byte = 0; byte < 256; ++byte)
    tokens.push_back(byte_token_text(static_cast<uint8_t>(byte)));
  tokens.insert(tokens.end(), {"ab", "abc",
                               "\xC4\xA0"
                               "a",
                               "<s>", "<user>"});
  std::vector<int32_t> types(tokens.size(), 1);
  types[259] = 3;  // <s>: control
  types[260] = 4;  // <user>: user-defined
  GgufWriter writer;
  writer.set_string("tokenizer.ggml.model", "gpt2")
      .set_string("tokenizer.ggml.pre", "gpt2")
      .set_string_array("tokenizer.ggml.tokens", tokens)
      .set_i32_array("tokenizer.ggml.token_type", types)
      .set_string_array("tokenizer.ggml.merges", {"a b", "ab c", "\xC4\xA0 a"})
      .set_u32("tokenizer.ggml.bos_token_id", 259)
      .set_u32("tokenizer.ggml.eos_token_id", 259);
  return writer;
}

Result<std::unique_ptr<Tokenizer>> build_from(const GgufWriter& writer,
                                              std::vector<uint8_t>& storage) {
  storage = writer.build();
  auto file = GgufFile::parse(storage);
  if (!file) return file.error();
  return Tokenizer::from_gguf(*file.value());
}

TEST(TinyTokenizerTest, MergesLowestRankFirstAndSplitsSpecials) {
  std::vector<uint8_t> storage;
  auto tok = build_from(tiny_tokenizer_file(), storage);
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  const Tokenizer& t = *tok.value();
  const int32_t kA = 'a';  // the first 256 ids are the bytes
  EXPECT_EQ(t.encode("abc"), (std::vector<int32_t>{257}));
  EXPECT_EQ(t.encode("abab"), (std::vector<int32_t>{256, 256}));
  EXPECT_EQ(t.encode(" a"), (std::vector<int32_t>{258}));
  EXPECT_EQ(t.encode("ba"), (std::vector<int32_t>{kA + 1, kA}));
  EXPECT_EQ(t.encode("x<s>abc<user>"), (std::vector<int32_t>{'x', 259, 257, 260}));
  // Without parse_special only user-defined tokens are matched.
  EXPECT_EQ(t.encode("<user>", false, false), (std::vector<int32_t>{260}));
  EXPECT_NE(t.encode("<s>", false, false), (std::vector<int32_t>{259}));
  EXPECT_EQ(t.decode(t.encode("x<s>abc<user>")), "xabc<user>");
  EXPECT_EQ(t.decode(t.encode("x<s>abc<user>"), true), "x<s>abc<user>");
  EXPECT_TRUE(t.is_end_of_generation(259));
  EXPECT_EQ(t.encode("abc", /*add_bos=*/true), (std::vector<int32_t>{259, 257}));
}

void expect_error(const GgufWriter& writer, const std::string& fragment) {
  std::vector<uint8_t> storage;
  auto tok = build_from(writer, storage);
  ASSERT_FALSE(tok.ok()) << "expected an error mentioning: " << fragment;
  EXPECT_NE(tok.error().message.find(fragment), std::string::npos)
      << "message: " << tok.error().message;
}

TEST(TinyTokenizerTest, BadTokenizerDataGivesClearErrors) {
  expect_error(tiny_tokenizer_file().set_string("tokenizer.ggml.model", "bert"),
               "unsupported tokenizer.ggml.model 'bert'");
  expect_error(tiny_tokenizer_file().set_string("tokenizer.ggml.pre", "foo"),
               "unsupported tokenizer.ggml.pre 'foo'");
  expect_error(tiny_tokenizer_file().set_string_array("tokenizer.ggml.merges", {"a b", "q zz"}),
               "tokenizer.ggml.merges[1] = 'q zz' references a token not in the vocabulary: 'zz'");
  expect_error(tiny_tokenizer_file().set_string_array("tokenizer.ggml.merges", {"ab"}),
               "is not two tokens separated by a space");
  expect_error(tiny_tokenizer_file().set_i32_array("tokenizer.ggml.token_type", {1, 1, 1}),
               "tokenizer.ggml.token_type has 3 entries but tokenizer.ggml.tokens has 261");
  expect_error(tiny_tokenizer_file().set_u32("tokenizer.ggml.bos_token_id", 261),
               "tokenizer.ggml.bos_token_id = 261 is outside the vocabulary");
  expect_error(tiny_tokenizer_file().remove_key("tokenizer.ggml.tokens"),
               "tokenizer.ggml.tokens is missing");
  expect_error(tiny_tokenizer_file().remove_key("tokenizer.ggml.merges"),
               "tokenizer.ggml.merges is missing");
  expect_error(tiny_tokenizer_file().set_string("tokenizer.ggml.tokens", "not an array"),
               "tokenizer.ggml.tokens");
}

TEST(TinyTokenizerTest, OtherPreTokenizersLoad) {
  for (const char* pre : {"smollm", "gpt2", "llama3", "llama-bpe", "default", "qwen2"}) {
    std::vector<uint8_t> storage;
    auto tok = build_from(tiny_tokenizer_file().set_string("tokenizer.ggml.pre", pre), storage);
    ASSERT_TRUE(tok.ok()) << pre << ": " << tok.error().message;
    EXPECT_EQ(tok.value()->decode(tok.value()->encode("abc 123 ab")), "abc 123 ab") << pre;
  }
}

TEST(ChatTemplateTest, RejectsMissingAndUnknownTemplates) {
  std::vector<uint8_t> storage = tiny_tokenizer_file().build();
  auto file = GgufFile::parse(storage);
  ASSERT_TRUE(file.ok()) << file.error().message;
  auto tok = Tokenizer::from_gguf(*file.value());
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  auto missing = ChatTemplate::from_gguf(*file.value(), *tok.value());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("no tokenizer.chat_template"), std::string::npos);

  storage = tiny_tokenizer_file()
                .set_string("tokenizer.chat_template",
                            "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")
                .build();
  file = GgufFile::parse(storage);
  ASSERT_TRUE(file.ok());
  auto unknown = ChatTemplate::from_gguf(*file.value(), *tok.value());
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("not one lightserve can render"), std::string::npos)
      << unknown.error().message;

  // A ChatML template without a default system prompt inserts none.
  storage = tiny_tokenizer_file()
                .set_string("tokenizer.chat_template",
                            "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
                            "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
                .build();
  file = GgufFile::parse(storage);
  ASSERT_TRUE(file.ok());
  auto plain = ChatTemplate::from_gguf(*file.value(), *tok.value());
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  EXPECT_EQ(plain->default_system_prompt(), "");
  const std::vector<ChatMessage> messages = {{"user", "hi"}};
  EXPECT_EQ(plain->render(messages, true).value(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace lightserve::model
