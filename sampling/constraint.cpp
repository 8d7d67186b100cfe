#include "sampling/constraint.h"

#include <dlpack/dlpack.h>
#include <xgrammar/xgrammar.h>

#include <algorithm>
#include <array>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "sampling/mask_workers.h"

namespace lightserve::sampling {

// Per token: its bytes, for the UTF-8 guard below (shared by every constraint of a compiler).
using TokenBytes = std::vector<std::string>;

class CompiledConstraint {
 public:
  CompiledConstraint(xgrammar::CompiledGrammar grammar, std::vector<int32_t> stop_ids,
                     int32_t logits_width, std::shared_ptr<const TokenBytes> bytes)
      : grammar_(std::move(grammar)),
        stop_ids_(std::move(stop_ids)),
        logits_width_(logits_width),
        bytes_(std::move(bytes)) {}
  const xgrammar::CompiledGrammar& grammar() const { return grammar_; }
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  int32_t logits_width() const { return logits_width_; }
  const TokenBytes& bytes() const { return *bytes_; }

 private:
  xgrammar::CompiledGrammar grammar_;
  std::vector<int32_t> stop_ids_;
  int32_t logits_width_;
  std::shared_ptr<const TokenBytes> bytes_;
};

namespace {

// JSON may hold whitespace between tokens, but at most this many in a row: a model that keeps
// emitting newlines would otherwise never finish its object.
constexpr int kMaxWhitespace = 16;

// XGrammar's messages carry "[hh:mm:ss] file.cc:line: " and "Check failed: (...) is false: "
// prefixes: keep what names the problem.
std::string clean_message(std::string what) {
  if (what.rfind('[', 0) == 0) {
    const size_t bracket = what.find("] ");
    const size_t colon = bracket == std::string::npos ? bracket : what.find(": ", bracket);
    if (colon != std::string::npos) what = what.substr(colon + 2);
  }
  if (what.rfind("Check failed", 0) == 0) {
    if (const size_t pos = what.find("is false: "); pos != std::string::npos) {
      what = what.substr(pos + 10);
    }
  }
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  return what;
}

const char* kind_name(ConstraintSpec::Kind kind) {
  switch (kind) {
    case ConstraintSpec::Kind::kJsonObject:
      return "JSON";
    case ConstraintSpec::Kind::kJsonSchema:
      return "JSON schema";
    case ConstraintSpec::Kind::kRegex:
      return "regular expression";
    case ConstraintSpec::Kind::kChoice:
      return "choice list";
    case ConstraintSpec::Kind::kGrammar:
      return "grammar";
    case ConstraintSpec::Kind::kStructuralTag:
      return "structural tag";
  }
  return "constraint";
}

}  // namespace

// XGrammar's byte-level matching lets a UTF-8 lead byte be followed by any continuation byte,
// so E0 80, ED A0 (a UTF-16 surrogate), F0 80 and F4 90 (overlong or beyond U+10FFFF) would pass
// and the output would not be valid UTF-8 (nor JSON). After one of those leads the guard allows
// only the second bytes RFC 3629 allows.
bool second_byte_ok(uint8_t lead, uint8_t second) {
  switch (lead) {
    case 0xE0:
      return second >= 0xA0 && second <= 0xBF;
    case 0xED:
      return second >= 0x80 && second <= 0x9F;
    case 0xF0:
      return second >= 0x90 && second <= 0xBF;
    case 0xF4:
      return second >= 0x80 && second <= 0x8F;
    default:
      return second >= 0x80 && second <= 0xBF;
  }
}

struct ConstraintMatcher::Impl {
  std::shared_ptr<const CompiledConstraint> compiled;
  xgrammar::GrammarMatcher matcher;
  std::vector<uint32_t> mask;
  int64_t shape = 0;
  uint8_t open_lead = 0;  // the output ends with this lead byte alone (E0, ED, F0 or F4), else 0
  // The mask of the current position is filled (by a worker, or by fill_now()).
  bool mask_ready = false;
  // A worker is filling the mask: nothing else touches `matcher` or `mask` until it is done.
  bool pending = false;
  std::mutex mutex;
  std::condition_variable done;

  void track(const std::string& bytes) {
    for (const char c : bytes) {
      const auto b = static_cast<uint8_t>(c);
      open_lead = (b == 0xE0 || b == 0xED || b == 0xF0 || b == 0xF4) ? b : 0;
    }
  }

  void guard_utf8() {
    if (open_lead == 0) return;
    const TokenBytes& bytes = compiled->bytes();
    for (size_t id = 0; id < bytes.size(); ++id) {
      uint32_t& word = mask[id / 32];
      const uint32_t bit = 1u << (id % 32);
      if ((word & bit) == 0 || bytes[id].empty()) continue;
      if (!second_byte_ok(open_lead, static_cast<uint8_t>(bytes[id][0]))) word &= ~bit;
    }
  }

  explicit Impl(std::shared_ptr<const CompiledConstraint> c)
      : compiled(std::move(c)), matcher(compiled->grammar()) {
    mask.assign(static_cast<size_t>((compiled->logits_width() + 31) / 32), 0);
    shape = static_cast<int64_t>(mask.size());
    fill_ahead();
  }
  ~Impl() { wait(); }

  void fill() {
    std::fill(mask.begin(), mask.end(), 0u);
    if (matcher.IsTerminated()) {
      // Complete and its stop id taken (the request ignores EOS): only stop ids stay possible.
      for (int32_t id : compiled->stop_ids()) mask[static_cast<size_t>(id) / 32] |= 1u << (id % 32);
      return;
    }
    DLTensor tensor{};
    tensor.data = mask.data();
    tensor.device = DLDevice{kDLCPU, 0};
    tensor.ndim = 1;
    tensor.dtype = DLDataType{kDLInt, 32, 1};
    tensor.shape = &shape;
    matcher.FillNextTokenBitmask(&tensor);
    guard_utf8();
  }

  // Queues the fill of the current position's mask on a worker (sampling/mask_workers.h);
  // without workers it is filled when first needed.
  void fill_ahead() {
    mask_ready = false;
    pending = true;
    const bool queued = detail::submit_mask_job([this] {
      fill();
      // Under the lock, notify included: once the owner sees !pending it may destroy *this.
      std::lock_guard<std::mutex> lock(mutex);
      mask_ready = true;
      pending = false;
      done.notify_all();
    });
    if (!queued) pending = false;
  }

  // Waits for a queued fill: every member function does, before it reads the matcher.
  void wait() {
    std::unique_lock<std::mutex> lock(mutex);
    done.wait(lock, [this] { return !pending; });
  }

  const std::vector<uint32_t>& current_mask() {
    wait();
    if (!mask_ready) {
      fill();
      mask_ready = true;
    }
    return mask;
  }
};

ConstraintMatcher::ConstraintMatcher(std::shared_ptr<const CompiledConstraint> compiled)
    : impl_(std::make_unique<Impl>(std::move(compiled))) {}
ConstraintMatcher::~ConstraintMatcher() = default;
ConstraintMatcher::ConstraintMatcher(ConstraintMatcher&&) noexcept = default;
ConstraintMatcher& ConstraintMatcher::operator=(ConstraintMatcher&&) noexcept = default;

const std::vector<uint32_t>& ConstraintMatcher::next_mask() {
  return impl_->current_mask();
}

namespace {

// For each byte of a mask word: its 8 bits as 32-bit lanes, all ones where the bit is set.
struct ByteLanes {
  uint32_t keep[8];
};
constexpr std::array<ByteLanes, 256> kByteLanes = [] {
  std::array<ByteLanes, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    for (uint32_t j = 0; j < 8; ++j) table[byte].keep[j] = ((byte >> j) & 1u) != 0 ? ~0u : 0u;
  }
  return table;
}();

}  // namespace

bool ConstraintMatcher::mask_logits(std::span<float> logits) {
  const std::vector<uint32_t>& mask = impl_->current_mask();
  constexpr float kBanned = -std::numeric_limits<float>::infinity();
  const uint32_t banned_bits = std::bit_cast<uint32_t>(kBanned);
  const size_t n = logits.size();
  bool any_allowed = false;  // an allowed id whose logit is above -infinity
  for (size_t word = 0; word * 32 < n; ++word) {
    const uint32_t bits = word < mask.size() ? mask[word] : 0u;
    const size_t begin = word * 32;
    const size_t count = std::min<size_t>(32, n - begin);
    if (bits != ~0u) {
      // Branch-free over the word's 32 logits as bits, a byte of the mask at a time through
      // kByteLanes (allowed and banned ids interleave unpredictably, so a branch per id would
      // mispredict half the time; fixed lanes let the compiler vectorize without AVX2's
      // variable shifts).
      auto apply = [&](uint32_t* values) {
        for (size_t byte = 0; byte < 4; ++byte) {
          const uint32_t* keep = kByteLanes[(bits >> (8 * byte)) & 0xffu].keep;
          uint32_t* lanes = values + 8 * byte;
          for (size_t j = 0; j < 8; ++j) lanes[j] = (lanes[j] & keep[j]) | (banned_bits & ~keep[j]);
        }
      };
      uint32_t values[32] = {};
      if (count == 32) {  // a constant size: the copies stay in registers
        std::memcpy(values, logits.data() + begin, sizeof(values));
        apply(values);
        std::memcpy(logits.data() + begin, values, sizeof(values));
      } else {
        std::memcpy(values, logits.data() + begin, count * sizeof(float));
        apply(values);
        std::memcpy(logits.data() + begin, values, count * sizeof(float));
      }
    }
    for (uint32_t allowed = bits; !any_allowed && allowed != 0; allowed &= allowed - 1) {
      const size_t i = begin + static_cast<size_t>(__builtin_ctz(allowed));
      any_allowed = i < n && logits[i] != kBanned;
    }
  }
  return any_allowed;
}

bool ConstraintMatcher::accept(int32_t token) {
  impl_->wait();
  if (impl_->matcher.IsTerminated()) return false;
  if (token < 0 || token >= impl_->compiled->logits_width()) return false;
  const TokenBytes& bytes = impl_->compiled->bytes();
  if (impl_->open_lead != 0 && static_cast<size_t>(token) < bytes.size() &&
      !bytes[static_cast<size_t>(token)].empty() &&
      !second_byte_ok(impl_->open_lead,
                      static_cast<uint8_t>(bytes[static_cast<size_t>(token)][0]))) {
    return false;  // the UTF-8 guard's refusal, as in the mask
  }
  if (!impl_->matcher.AcceptToken(token)) return false;
  if (static_cast<size_t>(token) < impl_->compiled->bytes().size()) {
    impl_->track(impl_->compiled->bytes()[static_cast<size_t>(token)]);
  }
  impl_->fill_ahead();
  return true;
}

bool ConstraintMatcher::terminated() const {
  impl_->wait();
  return impl_->matcher.IsTerminated();
}

struct ConstraintCompiler::Impl {
  std::shared_ptr<const TokenBytes> bytes;
  std::vector<int32_t> stop_ids;
  int32_t logits_width = 0;
  std::optional<xgrammar::TokenizerInfo> info;
  std::optional<xgrammar::GrammarCompiler> compiler;
};

ConstraintCompiler::ConstraintCompiler(const Vocabulary& vocabulary)
    : impl_(std::make_unique<Impl>()) {
  impl_->bytes = std::make_shared<const TokenBytes>(vocabulary.token_bytes);
  impl_->stop_ids = vocabulary.stop_ids;
  impl_->logits_width =
      std::max(vocabulary.logits_width, static_cast<int32_t>(vocabulary.token_bytes.size()));
  impl_->info.emplace(vocabulary.token_bytes, xgrammar::VocabType::RAW, impl_->logits_width,
                      vocabulary.stop_ids);
  // Two compile threads: the frontends compile on their own threads already. Cache unlimited in
  // entries but bounded in bytes (256 MiB), so a client cannot grow it without end.
  impl_->compiler.emplace(*impl_->info, 2, true, int64_t{256} << 20);
}

ConstraintCompiler::~ConstraintCompiler() = default;

Result<std::shared_ptr<const CompiledConstraint>> ConstraintCompiler::compile(
    const ConstraintSpec& spec) const {
  const std::string prefix = "'" + spec.field + "': invalid " + kind_name(spec.kind) + ": ";
  try {
    xgrammar::GrammarCompiler& c = *impl_->compiler;
    std::optional<xgrammar::CompiledGrammar> grammar;
    switch (spec.kind) {
      case ConstraintSpec::Kind::kJsonObject:
        // Any JSON object, as OpenAI's json_object mode (the builtin grammar also takes arrays).
        grammar.emplace(c.CompileJSONSchema(R"({"type": "object"})", true, std::nullopt,
                                            std::nullopt, false, kMaxWhitespace));
        break;
      case ConstraintSpec::Kind::kJsonSchema:
        // Not strict: properties a schema does not forbid may appear (JSON Schema's meaning);
        // OpenAI's strict mode sets additionalProperties false in the schema itself.
        grammar.emplace(c.CompileJSONSchema(spec.source, true, std::nullopt, std::nullopt, false,
                                            kMaxWhitespace));
        break;
      case ConstraintSpec::Kind::kRegex:
        grammar.emplace(c.CompileRegex(spec.source));
        break;
      case ConstraintSpec::Kind::kGrammar:
        grammar.emplace(c.CompileGrammar(spec.source, "root"));
        break;
      case ConstraintSpec::Kind::kChoice: {
        if (spec.choices.empty()) return Error{prefix + "the list is empty"};
        nlohmann::json elements = nlohmann::json::array();
        for (size_t i = 0; i < spec.choices.size(); ++i) {
          if (spec.choices[i].empty()) {
            return Error{prefix + "choice " + std::to_string(i) + " is empty"};
          }
          elements.push_back({{"type", "const_string"}, {"value", spec.choices[i]}});
        }
        const nlohmann::json tag = {{"type", "structural_tag"},
                                    {"format", {{"type", "or"}, {"elements", elements}}}};
        grammar.emplace(c.CompileStructuralTag(
            tag.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
        break;
      }
      case ConstraintSpec::Kind::kStructuralTag:
        grammar.emplace(c.CompileStructuralTag(spec.source));
        break;
    }
    return std::shared_ptr<const CompiledConstraint>(std::make_shared<CompiledConstraint>(
        std::move(*grammar), impl_->stop_ids, impl_->logits_width, impl_->bytes));
  } catch (const std::exception& e) {
    return Error{prefix + clean_message(e.what())};
  }
}

}  // namespace lightserve::sampling
