// The OpenAI-compatible wire format of the HTTP frontend (docs/design.md §7): request JSON → the
// shared RequestFields (JSON types checked here) → frontends::translate (values checked there, as
// for gRPC) → a serving::GenerateInput, with messages that name the field; and the engine's
// events → completion / chat.completion objects and their stream chunks. Also /tokenize and
// /detokenize.
//
// Pure functions over JSON and strings: no sockets, no engine. They never throw; every error is
// an invalid argument (HTTP 400 through error_mapping.h). Fields OpenAI defines that lightserve
// cannot honour (n > 1, echo, tools, response_format other than text, batches of prompts ...)
// are refused by name, and so are vLLM's and llama.cpp's extras it does not implement
// (guided_json, grammar, chat_template_kwargs ...); fields nobody defines are ignored, as
// OpenAI-compatible servers do.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
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
  serving::GenerateInput input;
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
struct TokenizeRequest {
  std::optional<std::string> prompt;
  std::optional<std::vector<model::ChatMessage>> messages;
  bool add_generation_prompt = true;
  bool add_special_tokens = true;
};
Result<TokenizeRequest> parse_tokenize_request(std::string_view body, const ApiContext& context);
std::string tokenize_response(const std::vector<int32_t>& tokens, int32_t max_model_len);

// POST /detokenize: {"tokens": [ids]}.
Result<std::vector<int32_t>> parse_detokenize_request(std::string_view body,
                                                      const ApiContext& context);
std::string detokenize_response(const std::string& text);

// GET /v1/models and GET /v1/models/{id}.
std::string model_object(const serving::ModelInfo& info, int32_t max_model_len, int64_t created);
std::string models_response(const serving::ModelInfo& info, int32_t max_model_len, int64_t created);

// The bytes a token id stands for (logprobs name tokens by their text).
using TokenText = std::function<std::string(int32_t)>;

// Builds the response of one generation from its events, for both the whole-response and the
// streamed (SSE) forms. One per request; not thread-safe.
class ResponseBuilder {
 public:
  ResponseBuilder(Endpoint endpoint, std::string model_name, TokenText token_text,
                  bool want_logprobs, int64_t created);

  const std::string& id() const { return id_; }

  // Whole response: feed every event, then call response() once kFinished was added.
  void add(const scheduler::RequestEvent& event);
  bool finished() const { return finish_.has_value(); }
  // The finish's error when the engine failed the request (kError), else nullopt.
  const std::optional<scheduler::EngineError>& error() const { return error_; }
  std::string response() const;

  // Streaming: the SSE text ("data: {...}\n\n" lines) this event releases, possibly empty. The
  // kFinished event's text ends with the usage chunk (when asked) and "data: [DONE]\n\n".
  std::string stream_event(const scheduler::RequestEvent& event, bool include_usage);

  // Chat with tools (tool_calls.h): <tool_call> blocks in the output become `tool_calls`, the
  // finish reason "tool_calls"; streamed as one delta per completed call.
  void enable_tool_calls();

 private:
  struct LogprobEntry {
    int32_t token_id;
    scheduler::TokenLogprobs logprobs;
    int32_t text_offset;
  };
  // One streamed chunk: a text delta (chat: the role first), its logprobs, a finish reason.
  nlohmann::json chunk(const std::string& text, const std::vector<LogprobEntry>& logprobs,
                       const char* finish_reason);
  nlohmann::json logprobs_json(const std::vector<LogprobEntry>& entries) const;
  nlohmann::json usage_json() const;
  // The finish reason as sent: "tool_calls" when calls were streamed and the model stopped.
  const char* finish_name() const;
  // Appends the event's text and logprobs; returns the logprobs entry it added (if any).
  std::optional<LogprobEntry> record(const scheduler::RequestEvent& event);

  Endpoint endpoint_;
  std::string model_name_;
  TokenText token_text_;
  bool want_logprobs_;
  int64_t created_;
  std::string id_;

  std::string text_;
  std::vector<LogprobEntry> logprobs_;
  std::optional<scheduler::FinishReason> finish_;
  std::optional<scheduler::EngineError> error_;
  scheduler::RequestTimings timings_;
  bool role_sent_ = false;
  std::unique_ptr<ToolCallParser> tool_parser_;  // set by enable_tool_calls()
  int32_t num_tool_calls_ = 0;                   // streamed so far
};

// "stop" | "length" | "abort" | "error": the OpenAI finish_reason.
const char* finish_reason_name(scheduler::FinishReason reason);

}  // namespace lightserve::frontends::openai
