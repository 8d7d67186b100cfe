// One request translation for both frontends (docs/design.md §7). Each protocol reads its wire
// format into RequestFields, checking only what its format alone decides (JSON types, which
// oneof is set, an enum's value); translate() does the rest once: the model name, the prompt
// form, the roles of chat messages, the OpenAI sampling defaults, the one seed generator, every
// range, token ids against the vocabulary, the LightTransfer override. A new field is added here
// once, and both protocols accept the same values and refuse the others with the same message.
//
// Messages name the field the client sent ('max_tokens' must be in [1, 2147483647], got 0), so
// the field names are the wire names; both protocols use the same ones (generation.proto follows
// the OpenAI names), except where a frontend names its own (prompt_ids_field, logprobs_field).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "model/tokenizer.h"
#include "serving/serving_core.h"

namespace lightserve::frontends {

// An integer as a client sent it, before any range check: JSON integers reach 2^64 - 1 and
// -2^63, protobuf's int32 and uint64 fit too. Kept whole so that a message shows the value sent.
class WireInt {
 public:
  WireInt() = default;
  static WireInt of(int64_t value);
  static WireInt of_unsigned(uint64_t value);

  bool in(int64_t lo, int64_t hi) const;
  // The value; only meaningful when in() holds for some range.
  int64_t get() const;
  std::string str() const;

 private:
  bool negative_ = false;
  uint64_t magnitude_ = 0;
};

struct RequestFields {
  std::optional<std::string> model;  // the served id when set and not empty
  // Exactly one prompt form, not empty.
  std::optional<std::string> prompt_text;
  std::optional<std::vector<WireInt>> prompt_ids;
  std::optional<std::vector<model::ChatMessage>> messages;  // roles: system (or developer),
                                                            // user, assistant
  const char* prompt_field = "prompt";  // how the protocol names the text or the ids
  bool add_generation_prompt = true;    // chat: open the assistant's turn after the messages
  std::optional<WireInt> max_tokens;    // [1, 2^31 - 1]
  // Unset: the OpenAI API's defaults (temperature 1, top_p 1, top_k and min_p off, no
  // penalties) and a fresh random seed.
  std::optional<double> temperature;         // [0, 2]
  std::optional<double> top_p;               // (0, 1]
  std::optional<double> min_p;               // [0, 1]
  std::optional<WireInt> top_k;              // [-1, 2^31 - 1]; -1 and 0 are off
  std::optional<double> presence_penalty;    // [-2, 2]
  std::optional<double> frequency_penalty;   // [-2, 2]
  std::optional<double> repetition_penalty;  // (0, 10]
  std::optional<uint64_t> seed;
  std::vector<std::pair<WireInt, double>> logit_bias;  // token id -> bias in [-100, 100]
  std::optional<WireInt> min_tokens;                   // [0, max_tokens]: EOS and stop ids held
  std::vector<std::string> stop;                       // at most kMaxStopStrings, none empty
  std::vector<WireInt> stop_token_ids;                 // in the vocabulary
  bool ignore_eos = false;
  std::optional<WireInt> logprobs;  // [0, 20] top alternatives; unset: none
  const char* logprobs_field = "logprobs";
  std::optional<WireInt> priority;  // int32
  serving::LightTransferOverride lighttransfer = serving::LightTransferOverride::kServerDefault;

  // Parallel samples, echo, chat rendering (issue 16).
  std::optional<WireInt> n;                // [1, kMaxParallelSamples]; unset: 1
  std::optional<WireInt> best_of;          // vLLM's: only equal to n (every sample is returned)
  bool echo = false;                       // prompt text (not chat), without logprobs
  std::optional<WireInt> prompt_logprobs;  // vLLM's: [0, 20] alternatives of each prompt token
  bool continue_final_message = false;     // chat
  std::vector<std::pair<std::string, std::string>> chat_template_kwargs;  // chat, values as text

  // Constrained decoding (response_format, guided_*, grammar, tools): the protocol reads which
  // constraint was asked for; serving::ServingCore::prepare() compiles it (a bad schema, regex or
  // grammar is refused there, naming `constraint->field`).
  std::optional<sampling::ConstraintSpec> constraint;
};

// What a request is checked against.
struct TranslationContext {
  std::string model_name;  // the served id
  int32_t vocab_size = 0;  // token ids must be in [0, vocab_size)
};

// The served model's: what every request of `core` is checked against.
TranslationContext translation_context(const serving::ServingCore& core);

inline constexpr int32_t kMaxStopStrings = 4;  // OpenAI's limit
// The largest n: each sample is a request of its own in the engine (its queue and batch).
inline constexpr int32_t kMaxParallelSamples = 32;

// The checked request, or an error message naming the field (an invalid argument).
Result<serving::GenerateInput> translate(const RequestFields& fields,
                                         const TranslationContext& context);

// `value` in [lo, hi], else an error naming `field` and the bound it crossed.
Status check_range(const std::string& field, const WireInt& value, int64_t lo, int64_t hi);

// Chat messages not empty, each role system, user or assistant ("developer", OpenAI's newer name
// for system, becomes system).
Status check_messages(std::vector<model::ChatMessage>& messages);

// The model name check on its own, for the endpoints that take a model but no generation.
Status check_model(const std::optional<std::string>& model, const TranslationContext& context);

// Token ids against the vocabulary: `field` names them in messages ("tokens", "token_ids").
Result<std::vector<int32_t>> check_token_ids(const std::vector<WireInt>& ids, const char* field,
                                             const TranslationContext& context);

// The seed of a request that has none: random, one generator for the process.
uint64_t random_seed();

// The id a request is logged and answered under: the client's x-request-id (HTTP header or gRPC
// metadata) when it is 1-128 characters of [A-Za-z0-9._:-], else a fresh "req-" + 16 hex digits.
std::string request_tag(std::string_view client_value);

// What echo puts before the output: the prompt text, or the prompt ids' text (control tokens
// rendered) when the prompt was ids.
std::string echo_text(const serving::GenerateInput& input, const model::Tokenizer& tokenizer);

// Detokenize for /detokenize and Detokenize: the ids' text, bytes that are not UTF-8 (a cut
// character) replaced by U+FFFD; control tokens rendered only when asked.
std::string detokenize(const model::Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                       bool render_special);

}  // namespace lightserve::frontends
