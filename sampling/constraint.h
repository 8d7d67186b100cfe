// Constrained decoding (docs/design.md §6, "Constrained decoding"): a request's output held to a
// JSON schema, the JSON grammar, a regular expression, a GBNF grammar, one of a list of strings or
// an XGrammar structural tag (tool calls), as a mask over the vocabulary that the Sampler applies
// before it draws. The grammars are compiled by XGrammar (third_party/xgrammar, the pinned PyPI
// sdist built as a static library) against the token *bytes* of the vocabulary: a Vocabulary is
// plain data, so sampling/ needs no tokenizer (serving/ fills it from model::Tokenizer).
//
// Cost: a compiled constraint is shared (immutable, cached by source in the compiler); each
// request has its own matcher state, and only constrained requests pay for a mask: an
// unconstrained request's sampling is unchanged. A matcher queues the fill of its next mask on the
// mask workers (sampling/mask_workers.h) as soon as a token is accepted, so the masks of a batch
// are filled in parallel while the engine goes on to the next forward pass.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace lightserve::sampling {

// What a request's output must match. `field` names the client's field in error messages.
struct ConstraintSpec {
  enum class Kind : uint8_t {
    kJsonObject,     // any JSON object (response_format json_object)
    kJsonSchema,     // source: a JSON schema (json_schema, guided_json)
    kRegex,          // source: a regular expression (guided_regex)
    kChoice,         // choices: exactly one of these strings (guided_choice)
    kGrammar,        // source: a GBNF / EBNF grammar whose start rule is "root" (grammar)
    kStructuralTag,  // source: an XGrammar structural tag as JSON (tool calls)
  };
  Kind kind = Kind::kJsonObject;
  std::string source;
  std::vector<std::string> choices;
  std::string field = "response_format";
};

// The vocabulary as a constraint sees it: each token id's bytes, and the ids that end generation.
struct Vocabulary {
  std::vector<std::string> token_bytes;  // "" for control tokens: never allowed by a grammar
  std::vector<int32_t> stop_ids;         // allowed once the constraint is complete
  int32_t logits_width = 0;              // ≥ token_bytes.size(): ids beyond are never allowed
};

class CompiledConstraint;  // opaque; immutable once compiled, shared between requests

// One request's position in its constraint. Not thread-safe (one caller thread at a time; the
// mask workers it uses are synchronized inside); lives in the request's Sampler.
class ConstraintMatcher {
 public:
  explicit ConstraintMatcher(std::shared_ptr<const CompiledConstraint> compiled);
  ~ConstraintMatcher();
  ConstraintMatcher(ConstraintMatcher&&) noexcept;
  ConstraintMatcher& operator=(ConstraintMatcher&&) noexcept;

  // Sets every logit the constraint does not allow next to -infinity. Once the constraint is
  // complete only the stop ids stay. Returns whether an allowed logit is left above -infinity
  // (false: the caller's own bans took every id the constraint allows).
  bool mask_logits(std::span<float> logits);
  // The allowed ids as bits (bit i of word i / 32), for tests and the fuzzer.
  const std::vector<uint32_t>& next_mask();
  // Advances past `token`; false (and no change) when the constraint does not allow it.
  bool accept(int32_t token);
  // A stop id was accepted: the output is complete.
  bool terminated() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Compiles constraints for one vocabulary. Thread-safe (the frontends compile in prepare(), on
// their own threads); compiled constraints are cached by their source.
class ConstraintCompiler {
 public:
  explicit ConstraintCompiler(const Vocabulary& vocabulary);
  ~ConstraintCompiler();
  // An Error naming spec.field and the problem for an invalid schema, regex or grammar.
  Result<std::shared_ptr<const CompiledConstraint>> compile(const ConstraintSpec& spec) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lightserve::sampling
