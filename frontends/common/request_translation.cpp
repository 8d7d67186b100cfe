#include "frontends/common/request_translation.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <random>

#include "frontends/common/error_mapping.h"
#include "scheduler/request.h"

namespace lightserve::frontends {
namespace {

using Problem = std::optional<std::string>;  // a field's error message, nullopt when fine

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();

std::string quoted(const std::string& name) {
  return "'" + name + "'";
}

std::string format_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

// `value` in [lo, hi]; the message names the bound that was crossed ("≥ 1" for 0 when there is
// no real upper bound, "≤ 2147483647" for 2147483648 when there is no real lower one).
Problem check_int(const std::string& name, const WireInt& value, int64_t lo, int64_t hi) {
  if (value.in(lo, hi)) return std::nullopt;
  const bool above = !value.in(std::numeric_limits<int64_t>::min(), hi);
  std::string range;
  if (hi >= kInt32Max && !above) {
    range = "≥ " + std::to_string(lo);
  } else if (lo <= kInt32Min && above) {
    range = "≤ " + std::to_string(hi);
  } else {
    range = "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  }
  return quoted(name) + " must be " + range + ", got " + value.str();
}

Problem read_int(const char* name, const std::optional<WireInt>& value, int64_t lo, int64_t hi,
                 std::optional<int64_t>& out) {
  if (!value) return std::nullopt;
  if (Problem p = check_int(name, *value, lo, hi)) return p;
  out = value->get();
  return std::nullopt;
}

// A number in [lo, hi] ((lo, hi] when lo_open), also as the float the sampler holds; unset keeps
// `out`.
Problem read_number(const char* name, const std::optional<double>& value, double lo, double hi,
                    bool lo_open, float& out) {
  if (!value) return std::nullopt;
  const double v = *value;
  const auto problem = [&] {
    return quoted(name) + " must be in " + (lo_open ? "(" : "[") + format_number(lo) + ", " +
           format_number(hi) + "], got " + format_number(v);
  };
  if (!std::isfinite(v) || v > hi || (lo_open ? v <= lo : v < lo)) return problem();
  const auto narrowed = static_cast<float>(v);
  // A double just above an open bound can round onto it (top_p 1e-50 is 0 as a float), which the
  // engine's SamplingParams::validate would refuse later with another message.
  if (lo_open && narrowed <= lo) {
    return problem() + ", which is " + format_number(narrowed) + " as a 32-bit float";
  }
  out = narrowed;
  return std::nullopt;
}

Problem token_ids(const std::vector<WireInt>& ids, const std::string& field,
                  const TranslationContext& context, std::vector<int32_t>& out) {
  out.clear();
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!ids[i].in(0, context.vocab_size - 1)) {
      return quoted(field + "[" + std::to_string(i) + "]") + " = " + ids[i].str() +
             " is not a token id (the vocabulary has " + std::to_string(context.vocab_size) +
             " tokens)";
    }
    out.push_back(static_cast<int32_t>(ids[i].get()));
  }
  return std::nullopt;
}

Problem read_prompt(const RequestFields& f, const TranslationContext& context,
                    serving::GenerateInput& input) {
  const int forms = (f.prompt_text ? 1 : 0) + (f.prompt_ids ? 1 : 0) + (f.messages ? 1 : 0);
  if (forms != 1) {
    return std::string(forms == 0 ? "the prompt is missing: give prompt text, token ids or chat "
                                    "messages"
                                  : "give exactly one of prompt text, token ids, chat messages");
  }
  const std::string empty = quoted(f.prompt_field) + " is empty: the prompt needs at least a token";
  if (f.prompt_text) {
    if (f.prompt_text->empty()) return empty;
    input.prompt_text = *f.prompt_text;
  } else if (f.prompt_ids) {
    if (f.prompt_ids->empty()) return empty;
    std::vector<int32_t> ids;
    if (Problem p = token_ids(*f.prompt_ids, f.prompt_field, context, ids)) return p;
    input.prompt_ids = std::move(ids);
  } else {
    std::vector<model::ChatMessage> messages = *f.messages;
    if (Status s = check_messages(messages); !s.ok()) return s.message();
    input.messages = std::move(messages);
  }
  return std::nullopt;
}

Problem read_sampling(const RequestFields& f, sampling::SamplingParams& s) {
  // OpenAI's defaults, not the CLI's.
  s.temperature = 1.0f;
  s.top_p = 1.0f;
  s.top_k = 0;
  s.min_p = 0.0f;
  if (Problem p = read_number("temperature", f.temperature, 0, 2, false, s.temperature)) return p;
  if (Problem p = read_number("top_p", f.top_p, 0, 1, true, s.top_p)) return p;
  if (Problem p = read_number("min_p", f.min_p, 0, 1, false, s.min_p)) return p;
  if (Problem p =
          read_number("presence_penalty", f.presence_penalty, -2, 2, false, s.presence_penalty)) {
    return p;
  }
  if (Problem p = read_number("frequency_penalty", f.frequency_penalty, -2, 2, false,
                              s.frequency_penalty)) {
    return p;
  }
  if (Problem p = read_number("repetition_penalty", f.repetition_penalty, 0, 10, true,
                              s.repetition_penalty)) {
    return p;
  }
  std::optional<int64_t> top_k;
  if (Problem p = read_int("top_k", f.top_k, -1, kInt32Max, top_k)) return p;
  if (top_k) s.top_k = static_cast<int32_t>(std::max<int64_t>(*top_k, 0));  // -1: off
  s.seed = f.seed ? *f.seed : random_seed();
  return std::nullopt;
}

Problem read_logit_bias(const RequestFields& f, const TranslationContext& context,
                        sampling::SamplingParams& s) {
  s.logit_bias.clear();
  for (const auto& [id, bias] : f.logit_bias) {
    const std::string name = "logit_bias[" + id.str() + "]";
    if (!id.in(0, context.vocab_size - 1)) {
      return quoted("logit_bias") + " names " + id.str() + ", not a token id (the vocabulary has " +
             std::to_string(context.vocab_size) + " tokens)";
    }
    float value = 0;
    if (Problem p = read_number(name.c_str(), bias, -100, 100, false, value)) return p;
    s.logit_bias.emplace_back(static_cast<int32_t>(id.get()), value);
  }
  std::sort(s.logit_bias.begin(), s.logit_bias.end());  // the wire's order is not meaningful
  return std::nullopt;
}

Problem read_stop(const RequestFields& f, const TranslationContext& context,
                  serving::GenerateInput& input) {
  if (f.stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return "'stop' may hold at most " + std::to_string(kMaxStopStrings) + " strings, got " +
           std::to_string(f.stop.size());
  }
  for (size_t i = 0; i < f.stop.size(); ++i) {
    if (f.stop[i].empty()) return quoted("stop[" + std::to_string(i) + "]") + " is empty";
  }
  input.stop = f.stop;
  return token_ids(f.stop_token_ids, "stop_token_ids", context, input.stop_token_ids);
}

// n and best_of, echo, the chat rendering options.
Problem read_samples_and_echo(const RequestFields& f, serving::GenerateInput& input) {
  std::optional<int64_t> n;
  if (Problem p = read_int("n", f.n, 1, kMaxParallelSamples, n)) return p;
  input.n = static_cast<int32_t>(n.value_or(1));
  std::optional<int64_t> best_of;
  if (Problem p = read_int("best_of", f.best_of, 1, kMaxParallelSamples, best_of)) return p;
  if (best_of && *best_of != input.n) {
    return "'best_of' = " + std::to_string(*best_of) + " with 'n' = " + std::to_string(input.n) +
           " is not supported: only best_of = n (every sample is returned)";
  }
  input.echo = f.echo;
  if (f.echo && f.messages) {
    return std::string("'echo' is only supported with a prompt, not with chat messages");
  }
  // The prompt's tokens' logprobs, computed during the prefill: for echo with logprobs (first in
  // the choice's logprobs, as vLLM) and for vLLM's prompt_logprobs field (a list of their own);
  // the engine computes the larger count of alternatives once.
  std::optional<int64_t> prompt_top;
  if (Problem p = read_int("prompt_logprobs", f.prompt_logprobs, 0,
                           scheduler::RequestParams::kMaxLogprobs, prompt_top)) {
    return p;
  }
  input.prompt_logprobs_field = prompt_top ? static_cast<int32_t>(*prompt_top) : -1;
  input.prompt_logprobs = std::max(f.echo ? input.logprobs : -1, input.prompt_logprobs_field);
  input.continue_final_message = f.continue_final_message;
  input.chat_template_kwargs = f.chat_template_kwargs;
  if (!f.messages && (f.continue_final_message || !f.chat_template_kwargs.empty())) {
    return std::string(f.continue_final_message ? "'continue_final_message'"
                                                : "'chat_template_kwargs'") +
           " needs chat messages";
  }
  return std::nullopt;
}

Problem translate_fields(const RequestFields& f, const TranslationContext& context,
                         serving::GenerateInput& input) {
  if (Status s = check_model(f.model, context); !s.ok()) return s.message();
  if (Problem p = read_prompt(f, context, input)) return p;
  std::optional<int64_t> number;
  if (Problem p = read_int("max_tokens", f.max_tokens, 1, kInt32Max, number)) return p;
  if (number) input.max_tokens = static_cast<int32_t>(*number);
  if (Problem p = read_sampling(f, input.sampling)) return p;
  if (Problem p = read_logit_bias(f, context, input.sampling)) return p;
  number.reset();
  if (Problem p = read_int("min_tokens", f.min_tokens, 0, kInt32Max, number)) return p;
  input.sampling.min_tokens = static_cast<int32_t>(number.value_or(0));
  if (input.max_tokens && input.sampling.min_tokens > *input.max_tokens) {
    return "'min_tokens' = " + std::to_string(input.sampling.min_tokens) +
           " is over 'max_tokens' = " + std::to_string(*input.max_tokens);
  }
  if (Problem p = read_stop(f, context, input)) return p;
  input.ignore_eos = f.ignore_eos;
  input.add_generation_prompt = f.add_generation_prompt;
  number.reset();
  constexpr int64_t kMaxLogprobs = scheduler::RequestParams::kMaxLogprobs;
  if (Problem p = read_int(f.logprobs_field, f.logprobs, 0, kMaxLogprobs, number)) return p;
  input.logprobs = number ? static_cast<int32_t>(*number) : -1;
  number.reset();
  if (Problem p = read_int("priority", f.priority, kInt32Min, kInt32Max, number)) return p;
  input.priority = static_cast<int32_t>(number.value_or(0));
  input.lighttransfer = f.lighttransfer;
  input.constraint = f.constraint;
  return read_samples_and_echo(f, input);
}

}  // namespace

WireInt WireInt::of(int64_t value) {
  WireInt w;
  w.negative_ = value < 0;
  // -INT64_MIN overflows int64; in uint64 it is exact.
  w.magnitude_ = w.negative_ ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  return w;
}

WireInt WireInt::of_unsigned(uint64_t value) {
  WireInt w;
  w.magnitude_ = value;
  return w;
}

bool WireInt::in(int64_t lo, int64_t hi) const {
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (!negative_ && magnitude_ > kMax) return false;  // above every int64 bound
  const int64_t v = get();
  return v >= lo && v <= hi;
}

int64_t WireInt::get() const {
  return negative_ ? static_cast<int64_t>(0 - magnitude_) : static_cast<int64_t>(magnitude_);
}

std::string WireInt::str() const {
  std::string text = negative_ ? "-" : "";
  text.append(std::to_string(magnitude_));  // not "-" + ...: GCC 12's false -Wrestrict
  return text;
}

TranslationContext translation_context(const serving::ServingCore& core) {
  return {core.model_info().name, core.tokenizer().vocab_size()};
}

Result<serving::GenerateInput> translate(const RequestFields& fields,
                                         const TranslationContext& context) {
  serving::GenerateInput input;
  if (Problem p = translate_fields(fields, context, input)) return Error{*p};
  return input;
}

Status check_range(const std::string& field, const WireInt& value, int64_t lo, int64_t hi) {
  if (Problem p = check_int(field, value, lo, hi)) return Error{*p};
  return Status::Ok();
}

Status check_messages(std::vector<model::ChatMessage>& messages) {
  if (messages.empty()) return Error{"'messages' is empty"};
  for (size_t i = 0; i < messages.size(); ++i) {
    std::string& role = messages[i].role;
    if (role == "developer") role = "system";  // OpenAI's newer name for it
    if (role != "system" && role != "user" && role != "assistant") {
      return Error{quoted("messages[" + std::to_string(i) + "].role") +
                   " must be one of system, user, assistant, got '" + role + "'"};
    }
  }
  return Status::Ok();
}

Status check_model(const std::optional<std::string>& model, const TranslationContext& context) {
  if (!model || model->empty() || *model == context.model_name) return Status::Ok();
  std::string message(kModelNotFoundPrefix);  // a 404 model_not_found (error_mapping.h)
  message.append(*model).append("' does not exist: this server serves '");
  return Error{message.append(context.model_name).append("'")};
}

Result<std::vector<int32_t>> check_token_ids(const std::vector<WireInt>& ids, const char* field,
                                             const TranslationContext& context) {
  std::vector<int32_t> out;
  if (Problem p = token_ids(ids, field, context, out)) return Error{*p};
  return out;
}

uint64_t random_seed() {
  static std::mutex mutex;
  static std::mt19937_64 rng{std::random_device{}()};
  const std::lock_guard lock(mutex);
  return rng();
}

std::string request_tag(std::string_view client_value) {
  const bool usable = !client_value.empty() && client_value.size() <= 128 &&
                      std::all_of(client_value.begin(), client_value.end(), [](char c) {
                        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' ||
                               c == '_' || c == ':' || c == '-';
                      });
  if (usable) return std::string(client_value);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string tag = "req-";
  uint64_t bits = random_seed();
  for (int i = 0; i < 16; ++i, bits >>= 4) tag += kDigits[bits & 15];
  return tag;
}

std::string echo_text(const serving::GenerateInput& input, const model::Tokenizer& tokenizer) {
  if (input.prompt_text) return *input.prompt_text;
  if (input.prompt_ids) return detokenize(tokenizer, *input.prompt_ids, /*render_special=*/true);
  return "";
}

std::string detokenize(const model::Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                       bool render_special) {
  model::StreamDecoder decoder(tokenizer, render_special);
  std::string text;
  for (const int32_t id : ids) text += decoder.push(id);
  return text + decoder.flush();
}

}  // namespace lightserve::frontends
