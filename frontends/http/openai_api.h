// The OpenAI-compatible wire format of the HTTP frontend (docs/design.md §7): request JSON → the
// shared RequestFields (JSON types checked here) → frontends::translate (values checked there, as
// for gRPC) → a serving::GenerateInput, with messages that name the field; and the engine's
// events → completion / chat.completion objects and their stream chunks. Also /tokenize and
// /detokenize.
//
// Pure functions over JSON and strings: no sockets, no engine. They never throw; every error is
// an invalid argument (HTTP 400 through error_mapping.h), except an unknown model (404, its
// message from check_model). The constraint fields (response_format, guided_*, grammar,
// json_schema) and tools are read by tool_calls.h. Fields OpenAI defines that lightserve cannot
// honour (the deprecated functions, batches of prompts ...) are refused by
// name, and so are vLLM's and llama.cpp's extras it does not implement (guided_whitespace_pattern,
// prompt_logprobs ...): README's fields table lists them; fields nobody defines are ignored, as
// OpenAI-compatible servers do.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "frontends/common/request_translation.h"
#include "frontends/http/tool_calls.h"
#include "scheduler/events.h"
#include "serving/serving_core.h"

namespace lightserve::frontends::openai {

enum class Endpoint : uint8_t { kCompletions, kChatCompletions };

// What a request is checked against: the served id and the vocabulary size.
using ApiContext = TranslationContext;

struct ParsedRequest {
  serving::GenerateInput input;  // n and echo included
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool tool_calls = false;     // chat with tools: parse <tool_call> blocks (tool_calls.h)
};

// The request body of /v1/completions or /v1/chat/completions. Sampling defaults are OpenAI's
// (temperature 1, top_p 1, top_k and min_p off); a request without `seed` gets a random one.
Result<ParsedRequest> parse_generate_request(std::string_view body, Endpoint endpoint,
                                             const ApiContext& context);

// POST /tokenize: {"prompt": "..."} or {"messages": [...], "add_generation_prompt": true}, with
// "add_special_tokens" (default true: BOS as the model says).
// The chat fields continue_final_message and chat_template_kwargs as for chat completions;
// "return_token_strs": true adds "token_strs", each token's text (vLLM's).
struct TokenizeRequest {
  std::optional<std::string> prompt;
  std::optional<std::vector<model::ChatMessage>> messages;
  bool add_generation_prompt = true;
  bool add_special_tokens = true;
  bool continue_final_message = false;
  std::vector<std::pair<std::string, std::string>> chat_template_kwargs;
  bool return_token_strs = false;
};
Result<TokenizeRequest> parse_tokenize_request(std::string_view body, const ApiContext& context);

// POST /detokenize: {"tokens": [ids]}.
Result<std::vector<int32_t>> parse_detokenize_request(std::string_view body,
                                                      const ApiContext& context);
std::string detokenize_response(const std::string& text);

// GET /v1/models and GET /v1/models/{id}.
std::string model_object(const serving::ModelInfo& info, int32_t max_model_len, int64_t created);
std::string models_response(const serving::ModelInfo& info, int32_t max_model_len, int64_t created);

// The bytes a token id stands for (logprobs name tokens by their text).
using TokenText = std::function<std::string(int32_t)>;

// What a response carries besides the events: n, echo, system_fingerprint, tool calls (issue 16).
struct ResponseOptions {
  int32_t n = 1;                   // choices, each fed with its index
  std::string echo;                // completions: the prompt text, before each choice's output
  std::string system_fingerprint;  // in every response and chunk; left out when empty
  // Chat with tools (tool_calls.h): each choice's <tool_call> blocks become its `tool_calls`, its
  // finish reason "tool_calls"; streamed as one delta per completed call.
  bool tool_calls = false;
  // The prompt's token ids, when the engine computes their logprobs (echo with logprobs, or
  // prompt_logprobs below).
  std::vector<int32_t> echo_prompt_ids = {};
  // Completions, echo with logprobs (-1: not asked): each choice's logprobs start with the
  // prompt's tokens (the first with null logprobs, the others from the first event's
  // prompt_logprobs) with this many alternatives, as vLLM returns them.
  int32_t echo_logprobs = -1;
  // vLLM's prompt_logprobs field (-1: not asked; needs echo_prompt_ids): the whole response
  // carries the prompt's logprobs as vLLM lists them, null first, then per token a map from
  // token id to {logprob, rank, decoded_token}: the prompt's token and this many alternatives.
  // Completions: in each choice; chat: at the top level.
  int32_t prompt_logprobs = -1;
};

// token_strs: when set, each token's text as "token_strs".
std::string tokenize_response(const std::vector<int32_t>& tokens, int32_t max_model_len,
                              const TokenText* token_strs = nullptr);

// Builds the response of one generation from its events, for both the whole-response and the
// streamed (SSE) forms: one choice per sample, each fed its own events (index) and holding its
// own streaming state (role, echo, tool-call parser). One per request; not thread-safe.
// Implemented in openai_response.cpp.
class ResponseBuilder {
 public:
  ResponseBuilder(Endpoint endpoint, std::string model_name, TokenText token_text,
                  bool want_logprobs, int64_t created, ResponseOptions options = {});

  const std::string& id() const { return id_; }

  // Whole response: feed every event, then call response() once finished().
  void add(const scheduler::RequestEvent& event, int32_t index = 0);
  // Every choice's kFinished was added, or one of them failed (error()).
  bool finished() const;
  // The first finish's error when the engine failed a choice (kError), else nullopt.
  const std::optional<scheduler::EngineError>& error() const { return error_; }
  std::string response() const;

  // Streaming: the SSE text ("data: {...}\n\n" lines) this event releases, possibly empty. The
  // event that makes finished() true ends its text with the usage chunk (when asked; usage sums
  // the choices' completion tokens) and "data: [DONE]\n\n"; a failed choice ends the stream
  // with an error event.
  std::string stream_event(const scheduler::RequestEvent& event, bool include_usage,
                           int32_t index = 0);

 private:
  struct LogprobEntry {
    int32_t token_id;
    scheduler::TokenLogprobs logprobs;
    int32_t text_offset;
    bool null_logprobs = false;  // the prompt's first token (echo): nothing predicts it
  };
  // The prompt's entries from the first event of a choice, with at most `top` alternatives each;
  // empty for the other events.
  std::vector<LogprobEntry> prompt_entries(const scheduler::RequestEvent& event, int32_t top) const;
  // vLLM's prompt_logprobs list from a choice's prompt entries.
  nlohmann::json prompt_logprobs_json(const std::vector<LogprobEntry>& entries) const;
  struct Choice {
    std::string text;  // echo included
    std::vector<LogprobEntry> logprobs;
    std::vector<LogprobEntry> prompt;  // options_.prompt_logprobs >= 0: the prompt's entries
    std::optional<scheduler::FinishReason> finish;
    scheduler::RequestTimings timings;
    bool role_sent = false;      // chat stream: the role chunk went out
    bool echo_sent = false;      // completions stream: the echo chunk went out
    ToolCallParser tool_parser;  // options_.tool_calls: this choice's streamed output
    int32_t num_tool_calls = 0;  // streamed so far
  };
  // One streamed chunk of choice `index`: a text delta (chat: the role first), its logprobs, a
  // finish reason.
  nlohmann::json chunk(int32_t index, const std::string& text,
                       const std::vector<LogprobEntry>& logprobs, const char* finish_reason);
  nlohmann::json envelope(const char* object) const;  // id, object, created, model, fingerprint
  nlohmann::json logprobs_json(const std::vector<LogprobEntry>& entries) const;
  nlohmann::json usage_json() const;
  // The finish reason as streamed: "tool_calls" when the choice streamed calls and stopped.
  static const char* finish_name(const Choice& choice);
  // Appends the event's text and logprobs to its choice; returns the logprobs entry it added.
  std::optional<LogprobEntry> record(const scheduler::RequestEvent& event, int32_t index);

  Endpoint endpoint_;
  std::string model_name_;
  TokenText token_text_;
  bool want_logprobs_;
  int64_t created_;
  ResponseOptions options_;
  std::string id_;

  std::vector<Choice> choices_;
  std::optional<scheduler::EngineError> error_;
};

// "stop" | "length" | "abort" | "error": the OpenAI finish_reason.
const char* finish_reason_name(scheduler::FinishReason reason);

}  // namespace lightserve::frontends::openai
