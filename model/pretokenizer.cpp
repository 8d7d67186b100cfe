#include "model/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <utility>

namespace lightserve::model {
namespace {

// The GPT-2 word pattern as llama.cpp writes it (no trailing `|\s+`: whitespace it leaves
// unmatched becomes a piece of its own, which splits the same way).
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct PreTokenizerRule {
  std::initializer_list<const char*> names;  // values of tokenizer.ggml.pre
  std::initializer_list<const char*> regexes;
  bool ignore_merges;
  bool add_bos = false;  // llama.cpp's default when the file has no tokenizer.ggml.add_bos_token
};

// One table, as llama.cpp's llm_tokenizer_bpe: names → ordered regex list.
const std::array<PreTokenizerRule, 6>& rules() {
  static const std::array<PreTokenizerRule, 6> kRules = {{
      {{"default", ""}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}, false},
      {{"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jina-es", "jina-de", "roberta-bpe"},
       {kGpt2},
       false},
      // Every digit alone, then the GPT-2 pattern (SmolLM, StarCoder).
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"},
       {R"(\p{N})", kGpt2},
       false},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"}, {kLlama3}, true, true},
      {{"dbrx", "smaug-bpe"}, {kLlama3}, false},
      {{"qwen2", "deepseek-r1-qwen", "stablelm2"}, {kQwen2}, false},
  }};
  return kRules;
}

}  // namespace

bool PreTokenizer::default_add_bos(std::string_view name) {
  for (const auto& rule : rules()) {
    for (const char* known : rule.names) {
      if (name == known) return rule.add_bos;
    }
  }
  return false;
}

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::~PreTokenizer() = default;

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::for_name(std::string_view name) {
  const PreTokenizerRule* rule = nullptr;
  for (const auto& candidate : rules()) {
    for (const char* known : candidate.names) {
      if (name == known) rule = &candidate;
    }
  }
  if (rule == nullptr) {
    return Error{"unsupported tokenizer.ggml.pre '" + std::string(name) + "'"};
  }
  std::unique_ptr<PreTokenizer> result(new PreTokenizer());
  result->name_ = name.empty() ? "default" : std::string(name);
  result->ignore_merges_ = rule->ignore_merges;
  for (const char* pattern : rule->regexes) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    // MATCH_INVALID_UTF: invalid UTF-8 in the input is never matched instead of failing the
    // whole match, so arbitrary bytes are safe.
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                                     &error_offset, nullptr);
    if (code == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error_code, message.data(), message.size());
      return Error{"pre-tokenizer '" + result->name_ + "': regex does not compile at offset " +
                   std::to_string(error_offset) + ": " +
                   reinterpret_cast<const char*>(message.data())};
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when absent
    auto regex = std::make_unique<Regex>();
    regex->code = code;
    result->regexes_.push_back(std::move(regex));
  }
  return result;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  // UTF-8-encoded surrogates (ED A0..BF xx) are invalid for PCRE2 but llama.cpp classifies them
  // as symbols: match on a copy where each is a 3-byte symbol (U+2020), and cut the original.
  std::string shadow;
  std::string_view subject_text = text;
  for (size_t at = text.find('\xED'); at != std::string_view::npos;
       at = text.find('\xED', at + 1)) {
    if (at + 2 < text.size() && (static_cast<uint8_t>(text[at + 1]) & 0xE0) == 0xA0 &&
        (static_cast<uint8_t>(text[at + 2]) & 0xC0) == 0x80) {
      if (shadow.empty()) shadow.assign(text);
      shadow.replace(at, 3, "\xE2\x80\xA0");
    }
  }
  if (!shadow.empty()) subject_text = shadow;

  using Range = std::pair<size_t, size_t>;  // [begin, end) in text
  std::vector<Range> current{{0, text.size()}};
  std::vector<Range> next;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(subject_text.data());
  for (const auto& regex : regexes_) {
    pcre2_match_data* match_data = pcre2_match_data_create_from_pattern(regex->code, nullptr);
    next.clear();
    for (const auto& [piece_begin, piece_end] : current) {
      // Match within the piece only, so lookarounds see its ends as the subject's ends.
      const PCRE2_SPTR piece = subject + piece_begin;
      const size_t length = piece_end - piece_begin;
      size_t last_end = 0;
      size_t offset = 0;
      while (offset < length) {
        const int rc = pcre2_match(regex->code, piece, length, offset, 0, match_data, nullptr);
        if (rc < 0) break;
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
        const size_t start = ovector[0];
        const size_t end = ovector[1];
        if (end <= start) {  // empty match: none of our patterns has one, but never loop
          offset = start + 1;
          continue;
        }
        if (start > last_end) next.emplace_back(piece_begin + last_end, piece_begin + start);
        next.emplace_back(piece_begin + start, piece_begin + end);
        last_end = end;
        offset = end;
      }
      if (last_end < length) next.emplace_back(piece_begin + last_end, piece_end);
    }
    pcre2_match_data_free(match_data);
    current.swap(next);
  }
  for (const auto& [begin, end] : current) pieces.push_back(text.substr(begin, end - begin));
}

}  // namespace lightserve::model
