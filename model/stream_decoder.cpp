// StreamDecoder: whole UTF-8 characters out, an incomplete trailing sequence held back, invalid
// bytes replaced by U+FFFD (so what it emits is always valid UTF-8).
#include "model/tokenizer.h"

namespace lightserve::model {
namespace {

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool is_continuation(uint8_t byte) {
  return (byte & 0xC0) == 0x80;
}

// Allowed range of the second byte after `lead` (excludes overlongs, surrogates, > U+10FFFF).
void second_byte_range(uint8_t lead, uint8_t& low, uint8_t& high) {
  low = 0x80;
  high = 0xBF;
  if (lead == 0xE0) low = 0xA0;
  if (lead == 0xED) high = 0x9F;
  if (lead == 0xF0) low = 0x90;
  if (lead == 0xF4) high = 0x8F;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool render_special)
    : tokenizer_(tokenizer), render_special_(render_special) {}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tokenizer_.token_bytes(id, render_special_);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const auto lead = static_cast<uint8_t>(pending_[i]);
    size_t length = 0;
    if (lead < 0x80) {
      length = 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
    } else {
      out += kReplacement;  // stray continuation byte or a byte never valid in UTF-8
      ++i;
      continue;
    }
    size_t valid = 1;  // bytes of this sequence seen valid so far
    bool incomplete = false;
    while (valid < length) {
      if (i + valid >= pending_.size()) {
        incomplete = true;
        break;
      }
      const auto byte = static_cast<uint8_t>(pending_[i + valid]);
      uint8_t low = 0x80;
      uint8_t high = 0xBF;
      if (valid == 1) second_byte_range(lead, low, high);
      if (!is_continuation(byte) || byte < low || byte > high) break;
      ++valid;
    }
    if (incomplete) break;  // hold back until more bytes arrive
    if (valid < length) {
      out += kReplacement;  // the maximal invalid prefix becomes one U+FFFD
      i += valid;
      continue;
    }
    out.append(pending_, i, length);
    i += length;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = pending_.empty() ? std::string() : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace lightserve::model
