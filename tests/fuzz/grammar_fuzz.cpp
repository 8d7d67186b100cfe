// libFuzzer target for constrained decoding (sampling/constraint.*: XGrammar's JSON schema, regex,
// GBNF and structural tag front ends, and its token-mask matcher). Input: one kind byte (mod 6:
// JSON schema, regex, grammar, choice list, structural tag, JSON object), one byte that steers
// the walk, then the source (for a choice list: choices separated by NUL bytes).
// What must hold: compile() returns a constraint or an error that names the field, without a
// source location; with a constraint, a walk of up to 48 tokens, each picked from the mask,
// is accepted token by token, the mask never allows a control or padding id, a token outside the
// mask is refused, and once a stop id is accepted the matcher is terminated.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/check.h"
#include "sampling/constraint.h"

namespace {

using lightserve::sampling::ConstraintCompiler;
using lightserve::sampling::ConstraintMatcher;
using lightserve::sampling::ConstraintSpec;
using lightserve::sampling::Vocabulary;

constexpr int32_t kControl = 256 + 8;  // ids: 256 bytes, 8 words, a control token, the stop id
constexpr int32_t kStop = kControl + 1;
constexpr int32_t kWidth = kStop + 5;  // padded

const ConstraintCompiler& compiler() {
  static const ConstraintCompiler* c = [] {
    Vocabulary v;
    for (int b = 0; b < 256; ++b) v.token_bytes.push_back(std::string(1, static_cast<char>(b)));
    for (const char* t : {"{\"", "\": ", "\", \"", "true", "null", "abc", "  ", "}\n"}) {
      v.token_bytes.push_back(t);
    }
    v.token_bytes.push_back("");  // control
    v.token_bytes.push_back("");  // stop
    v.stop_ids = {kStop};
    v.logits_width = kWidth;
    return new ConstraintCompiler(v);
  }();
  return *c;
}

bool allowed(const std::vector<uint32_t>& mask, int32_t id) {
  return ((mask[static_cast<size_t>(id) / 32] >> (id % 32)) & 1u) != 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > 1024) return 0;
  using Kind = ConstraintSpec::Kind;
  constexpr Kind kKinds[] = {Kind::kJsonSchema, Kind::kRegex,         Kind::kGrammar,
                             Kind::kChoice,     Kind::kStructuralTag, Kind::kJsonObject};
  ConstraintSpec spec;
  spec.kind = kKinds[data[0] % 6];
  spec.field = "fuzzed";
  uint32_t steer = data[1];
  const std::string source(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (spec.kind == Kind::kChoice) {
    size_t start = 0;
    for (size_t i = 0; i <= source.size(); ++i) {
      if (i == source.size() || source[i] == '\0') {
        spec.choices.push_back(source.substr(start, i - start));
        start = i + 1;
      }
    }
  } else {
    spec.source = source;
  }
  auto compiled = compiler().compile(spec);
  if (!compiled.ok()) {
    const std::string& message = compiled.error().message;
    LS_CHECK(message.rfind("'fuzzed': ", 0) == 0) << message;
    // No source location leaked: XGrammar's "[hh:mm:ss] file.cc:line: " prefix is cut, and any
    // location-like text is the input's own, which XGrammar's errors quote (less its control
    // bytes: two fuzzed schemas held ".cc:" and "xgrammar/cpp/").
    const size_t detail = message.find(": ", 10);
    LS_CHECK(detail != std::string::npos && message.compare(detail + 2, 1, "[") != 0) << message;
    std::string visible_source;
    for (const char ch : source) {
      if (static_cast<unsigned char>(ch) >= 0x20) visible_source += ch;
    }
    for (const char* location : {".cc:", "xgrammar/cpp/"}) {
      LS_CHECK(message.find(location) == std::string::npos ||
               visible_source.find(location) != std::string::npos)
          << message;
    }
    return 0;
  }
  ConstraintMatcher matcher(compiled.value());
  for (int step = 0; step < 48; ++step) {
    const std::vector<uint32_t> mask = matcher.next_mask();
    LS_CHECK(!allowed(mask, kControl)) << "a control token is allowed";
    for (int32_t id = kStop + 1; id < kWidth; ++id) LS_CHECK(!allowed(mask, id)) << id;
    std::vector<int32_t> ids;
    for (int32_t id = 0; id < kWidth; ++id) {
      if (allowed(mask, id)) ids.push_back(id);
    }
    if (ids.empty()) break;  // a grammar that can neither go on nor end (allowed: the input's)
    steer = steer * 1103515245u + 12345u;
    // Refuse one id outside the mask, when there is one.
    for (int32_t id = static_cast<int32_t>((steer >> 8) % kWidth), n = 0; n < kWidth;
         ++n, id = (id + 1) % kWidth) {
      if (!allowed(mask, id)) {
        LS_CHECK(!matcher.accept(id)) << "token " << id << " outside the mask was accepted";
        break;
      }
    }
    const int32_t pick = ids[(steer >> 16) % ids.size()];
    LS_CHECK(matcher.accept(pick)) << "token " << pick << " from the mask was refused";
    if (pick == kStop) {
      LS_CHECK(matcher.terminated());
      LS_CHECK(!matcher.accept('a'));
      break;
    }
    LS_CHECK(!matcher.terminated());
  }
  return 0;
}
