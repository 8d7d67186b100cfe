// Shared by the libFuzzer targets in tests/fuzz/ (docs/reliability.md "Fuzzing"): where the default
// model is, and a UTF-8 reference the tokenizer targets check against. Properties are checked
// with LS_CHECK (base/check.h), which aborts in every build type, so the replay executables that
// the normal (Release, GCC) suite runs check them too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

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

}  // namespace lightserve::fuzzing
