// libFuzzer target for the default model's tokenizer and StreamDecoder (model/tokenizer.h) on
// arbitrary bytes, read two ways: as text to encode, and as token ids to decode. What must hold:
//   - encode returns ids inside the vocabulary, whatever the bytes (invalid UTF-8 included);
//   - text that is valid UTF-8 comes back byte for byte: decode(encode(text)) == text, without
//     special-token parsing (with it, once more via render_special), when the vocabulary has a
//     token for each of its bytes; ASCII text comes back without the bytes it has none for (the
//     default model has no token for 0x06: encode drops it, as llama.cpp does; the fuzzer found
//     this, LLVMFuzzerInitialize lists such bytes);
//   - decode and token_bytes accept any id, out of range ones included, and never crash;
//   - StreamDecoder emits valid UTF-8 only, and what it emits over a sequence (pushes + flush)
//     equals decode() of that sequence with each maximal invalid subpart replaced by one U+FFFD
//     (an independent reference, fuzz_support.h); for valid UTF-8 it is decode() itself.
// The tokenizer is built once, from the model's GGUF, in LLVMFuzzerInitialize.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/check.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using lightserve::model::GgufFile;
using lightserve::model::StreamDecoder;
using lightserve::model::Tokenizer;

const Tokenizer* tokenizer = nullptr;
std::array<bool, 256> has_byte_token{};  // the vocabulary holds the byte's own token

// GPT-2's byte alphabet: the character each byte's token is spelled with.
std::string byte_token_text(int byte) {
  uint32_t code_point = static_cast<uint32_t>(byte);
  if (!((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174)) {
    int n = 0;
    for (int b = 0; b < byte; ++b) {
      if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) ++n;
    }
    code_point = 256 + static_cast<uint32_t>(n);
  }
  std::string out;
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
  return out;
}

// Ids from bytes: two bytes each; the top values name ids outside the vocabulary, the rest fold
// into [0, vocab_size + 16) so the special tokens at the start and the end of it, the byte tokens
// and just-too-large ids are all reached.
std::vector<int32_t> ids_from_bytes(std::string_view bytes, int32_t vocab_size) {
  static constexpr int32_t kOutside[] = {-1, -2, INT32_MIN, INT32_MAX, 1 << 20, 1 << 30};
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    const auto value = static_cast<uint16_t>(static_cast<uint8_t>(bytes[i]) |
                                             (static_cast<uint8_t>(bytes[i + 1]) << 8));
    if (value >= 0xFFFA) {
      ids.push_back(kOutside[value - 0xFFFA]);
    } else {
      ids.push_back(static_cast<int32_t>(value % static_cast<uint32_t>(vocab_size + 16)));
    }
  }
  return ids;
}

void check_stream(const std::vector<int32_t>& ids, bool render_special) {
  StreamDecoder stream(*tokenizer, render_special);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    LS_CHECK(lightserve::fuzzing::is_valid_utf8(piece))
        << "push(" << id << ") emitted invalid UTF-8";
    streamed += piece;
  }
  const std::string rest = stream.flush();
  LS_CHECK(lightserve::fuzzing::is_valid_utf8(rest)) << "flush() emitted invalid UTF-8";
  streamed += rest;
  const std::string whole = tokenizer->decode(ids, render_special);
  LS_CHECK(streamed == lightserve::fuzzing::replace_invalid_utf8(whole))
      << "streamed text differs from decode() with invalid bytes replaced (" << ids.size()
      << " ids, " << whole.size() << " bytes)";
  if (lightserve::fuzzing::is_valid_utf8(whole)) LS_CHECK(streamed == whole);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const std::string path = lightserve::fuzzing::model_path_or_exit();
  auto file = GgufFile::open(path);
  LS_CHECK(file.ok()) << file.error().message;
  auto tok = Tokenizer::from_gguf(*file.value());
  LS_CHECK(tok.ok()) << tok.error().message;
  tokenizer = std::move(tok).value().release();  // lives for the process
  std::string missing;
  for (int byte = 0; byte < 256; ++byte) {
    has_byte_token[byte] = tokenizer->find_token(byte_token_text(byte)).has_value();
    if (!has_byte_token[byte]) {
      missing += ' ';  // not " " + ...: GCC 12's false -Wrestrict
      missing += std::to_string(byte);
    }
  }
  if (!missing.empty())
    std::fprintf(stderr, "tokenizer_fuzz: no token for bytes%s\n", missing.c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int32_t vocab_size = tokenizer->vocab_size();
  const bool add_bos = (flags & 1) != 0;
  const bool render_special = (flags & 2) != 0;

  if ((flags & 4) == 0) {
    // Bytes as text.
    for (const bool parse_special : {false, true}) {
      const std::vector<int32_t> ids = tokenizer->encode(bytes, add_bos, parse_special);
      for (int32_t id : ids) {
        LS_CHECK(id >= 0 && id < vocab_size) << "encode produced id " << id;
      }
      bool all_bytes_have_tokens = true;
      bool ascii = true;
      std::string representable;  // the text without the bytes that have no token
      for (const char c : bytes) {
        const auto byte = static_cast<uint8_t>(c);
        all_bytes_have_tokens = all_bytes_have_tokens && has_byte_token[byte];
        ascii = ascii && byte < 0x80;
        if (has_byte_token[byte]) representable.push_back(c);
      }
      // BOS, when added, is a control token: decode without render_special drops it.
      const std::string text = tokenizer->decode(ids, false);
      if (!parse_special && ascii) {
        LS_CHECK(text == representable)
            << "decode(encode(text)) != text for " << bytes.size() << " bytes of ASCII";
      }
      if (lightserve::fuzzing::is_valid_utf8(bytes) && all_bytes_have_tokens) {
        if (!parse_special) {
          LS_CHECK(text == bytes) << "decode(encode(text)) != text for " << bytes.size()
                                  << " bytes of valid UTF-8";
        }
        if (parse_special && !add_bos) {
          LS_CHECK(tokenizer->decode(ids, true) == bytes)
              << "decode(encode(text, parse_special), render_special) != text";
        }
      }
      check_stream(ids, render_special);
    }
  } else {
    // Bytes as ids.
    const std::vector<int32_t> ids = ids_from_bytes(bytes, vocab_size);
    for (int32_t id : ids) {
      (void)tokenizer->token_bytes(id, render_special);
      (void)tokenizer->token_text(id);
      (void)tokenizer->is_control(id);
      (void)tokenizer->is_end_of_generation(id);
    }
    check_stream(ids, render_special);
  }
  return 0;
}
