// Shared by the libFuzzer targets in tests/fuzz/ (docs/reliability.md "Fuzzing"): where the default
// model is, a UTF-8 reference the tokenizer targets check against, and what an accepted
// generation request must satisfy (the OpenAI and gRPC translation targets). Properties are checked
// with LS_CHECK (base/check.h), which aborts in every build type, so the replay executables that
// the normal (Release, GCC) suite runs check them too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "base/check.h"

namespace lightserve::fuzzing {

// The model the tokenizer, chat, OpenAI and HTTP targets load once: $LIGHTSERVE_TEST_MODEL, else
// the default model in models/ (scripts/fetch_model.sh). Without it a replay is skipped (exit 77,
// ctest's SKIP_RETURN_CODE) and a fuzzing run stops before it starts.
inline std::string model_path_or_exit() {
  const char* env = std::getenv("LIGHTSERVE_TEST_MODEL");
  std::string path = env != nullptr && *env != '\0' ? env : LIGHTSERVE_FUZZ_MODEL;
  if (!std::filesystem::exists(path)) {
    std::fprintf(stderr, "skipped: model %s absent (scripts/fetch_model.sh)\n", path.c_str());
    std::exit(77);
  }
  return path;
}

// Strict UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
inline bool is_valid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    size_t length = 0;
    uint8_t low = 0x80;
    uint8_t high = 0xBF;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto byte = static_cast<uint8_t>(text[i + k]);
      if (byte < (k == 1 ? low : 0x80) || byte > (k == 1 ? high : 0xBF)) return false;
    }
    i += length;
  }
  return true;
}

// `text` with each maximal invalid subpart replaced by one U+FFFD (Unicode's "best practice",
// the WHATWG decoder's behaviour), written independently of model/stream_decoder.cpp.
inline std::string replace_invalid_utf8(std::string_view text) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    size_t length = 0;
    uint8_t low = 0x80;
    uint8_t high = 0xBF;
    if (lead < 0x80) {
      out.push_back(text[i++]);
      continue;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      out.append(kReplacement);
      ++i;
      continue;
    }
    size_t valid = 1;
    while (valid < length && i + valid < text.size()) {
      const auto byte = static_cast<uint8_t>(text[i + valid]);
      if (byte < (valid == 1 ? low : 0x80) || byte > (valid == 1 ? high : 0xBF)) break;
      ++valid;
    }
    if (valid == length) {
      out.append(text.substr(i, length));
    } else {
      out.append(kReplacement);
    }
    i += valid;
  }
  return out;
}

// A token id a frontend accepted: inside the vocabulary.
inline void check_token_id(int64_t id, int32_t vocab_size, const char* what) {
  LS_CHECK(id >= 0 && id < vocab_size) << what << " id " << id << " was accepted";
}

// A generation request a frontend accepted (serving::GenerateInput, made by the translation both
// frontends share, frontends/common/request_translation.h) is one the engine may be handed:
// exactly one prompt form, not empty; chat roles system, user or assistant; every token id
// (prompt, stop_token_ids, logit_bias) inside the vocabulary; max_tokens unset or >= 1 and
// min_tokens in [0, max_tokens]; logprobs in [-1, 20]; at most 4 stop strings, none empty; and
// sampling values the sampler's own check (SamplingParams::validate, which the engine runs again)
// accepts, so no value passes the frontend only to be refused later with another message. A
// template so that the targets that do not link serving need not include serving_core.h.
template <typename GenerateInput>
void check_accepted_generate_input(const GenerateInput& input, int32_t vocab_size) {
  const int forms = int{input.prompt_text.has_value()} + int{input.prompt_ids.has_value()} +
                    int{input.messages.has_value()};
  LS_CHECK(forms == 1) << forms << " prompt forms in one accepted request";
  if (input.prompt_text) LS_CHECK(!input.prompt_text->empty()) << "an empty prompt was accepted";
  if (input.prompt_ids) {
    LS_CHECK(!input.prompt_ids->empty()) << "an empty prompt was accepted";
    for (int32_t id : *input.prompt_ids) check_token_id(id, vocab_size, "prompt");
  }
  if (input.messages) {
    LS_CHECK(!input.messages->empty()) << "no messages were accepted";
    for (const auto& m : *input.messages) {
      LS_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant")
          << "role '" << m.role << "' was accepted";
    }
  }
  for (int32_t id : input.stop_token_ids) check_token_id(id, vocab_size, "stop token");
  for (const auto& bias : input.sampling.logit_bias) {
    check_token_id(bias.first, vocab_size, "logit_bias");
  }
  LS_CHECK(!input.max_tokens || *input.max_tokens >= 1) << "max_tokens " << *input.max_tokens;
  LS_CHECK(input.sampling.min_tokens >= 0) << "min_tokens " << input.sampling.min_tokens;
  LS_CHECK(!input.max_tokens || input.sampling.min_tokens <= *input.max_tokens)
      << "min_tokens " << input.sampling.min_tokens << " over max_tokens " << *input.max_tokens;
  LS_CHECK(input.logprobs >= -1 && input.logprobs <= 20) << "logprobs " << input.logprobs;
  LS_CHECK(input.stop.size() <= 4) << input.stop.size() << " stop strings";
  for (const std::string& stop : input.stop) LS_CHECK(!stop.empty()) << "an empty stop string";
  const auto valid = input.sampling.validate();
  LS_CHECK(valid.ok()) << "accepted, but the sampler refuses it: " << valid.message();
}

}  // namespace lightserve::fuzzing
