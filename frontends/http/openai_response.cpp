// ResponseBuilder (openai_api.h): the engine's events of the n samples → the OpenAI response
// objects and their SSE chunks, each choice with its own stream state and tool-call parser.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "frontends/common/error_mapping.h"
#include "frontends/common/request_translation.h"
#include "frontends/http/openai_api.h"

namespace lightserve::frontends::openai {
namespace {

using json = nlohmann::json;

// Text from the model may hold invalid UTF-8 (a token's partial bytes): replace, never throw.
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string random_hex(int num_chars) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  uint64_t bits = 0;
  for (int i = 0; i < num_chars; ++i) {
    if (i % 16 == 0) bits = random_seed();
    out += kDigits[bits & 15];
    bits >>= 4;
  }
  return out;
}

std::string sse(const json& data) {
  return "data: " + dump(data) + "\n\n";
}

// OpenAI's tool_calls array; streamed deltas carry each call's index.
json tool_calls_json(const std::vector<ToolCall>& calls, int32_t first_index, bool indexed) {
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    json call = {{"id", calls[i].id},
                 {"type", "function"},
                 {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (indexed) call["index"] = first_index + static_cast<int32_t>(i);
    out.push_back(std::move(call));
  }
  return out;
}

// Content around tool calls: null when only whitespace is left.
json tool_content(const std::string& content) {
  if (content.find_first_not_of(" \t\r\n") == std::string::npos) return nullptr;
  return content;
}

}  // namespace

const char* finish_reason_name(scheduler::FinishReason reason) {
  switch (reason) {
    case scheduler::FinishReason::kStop:
      return "stop";
    case scheduler::FinishReason::kLength:
      return "length";
    case scheduler::FinishReason::kAbort:
      return "abort";
    case scheduler::FinishReason::kError:
      return "error";
  }
  return "stop";
}

ResponseBuilder::ResponseBuilder(Endpoint endpoint, std::string model_name, TokenText token_text,
                                 bool want_logprobs, int64_t created, ResponseOptions options)
    : endpoint_(endpoint),
      model_name_(std::move(model_name)),
      token_text_(std::move(token_text)),
      want_logprobs_(want_logprobs),
      created_(created),
      options_(std::move(options)),
      id_((endpoint == Endpoint::kCompletions ? "cmpl-" : "chatcmpl-") + random_hex(24)),
      choices_(static_cast<size_t>(std::max(options_.n, 1))) {
  for (Choice& c : choices_) c.text = options_.echo;
}

std::vector<ResponseBuilder::LogprobEntry> ResponseBuilder::prompt_entries(
    const scheduler::RequestEvent& event, int32_t top) const {
  std::vector<LogprobEntry> out;
  const std::vector<int32_t>& ids = options_.echo_prompt_ids;
  if (ids.empty() || event.prompt_logprobs.size() + 1 != ids.size()) return out;
  int32_t offset = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    LogprobEntry e{ids[t], t == 0 ? scheduler::TokenLogprobs{} : event.prompt_logprobs[t - 1],
                   offset, t == 0};
    if (e.logprobs.top.size() > static_cast<size_t>(top)) {
      e.logprobs.top.resize(static_cast<size_t>(top));
    }
    offset += static_cast<int32_t>(token_text_(ids[t]).size());
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<ResponseBuilder::LogprobEntry> ResponseBuilder::record(
    const scheduler::RequestEvent& event, int32_t index) {
  Choice& c = choices_.at(static_cast<size_t>(index));
  if (!event.prompt_logprobs.empty()) {
    if (options_.prompt_logprobs >= 0) c.prompt = prompt_entries(event, options_.prompt_logprobs);
    if (options_.echo_logprobs >= 0) {  // echo: the prompt's tokens come first
      for (LogprobEntry& e : prompt_entries(event, options_.echo_logprobs)) {
        c.logprobs.push_back(std::move(e));
      }
    }
  }
  std::optional<LogprobEntry> entry;
  if (event.kind == scheduler::RequestEvent::Kind::kToken && event.logprobs && want_logprobs_) {
    entry = LogprobEntry{event.token_id, *event.logprobs, static_cast<int32_t>(c.text.size())};
    c.logprobs.push_back(*entry);
  }
  c.text += event.text;
  if (event.kind == scheduler::RequestEvent::Kind::kFinished) {
    c.finish = event.finish_reason.value_or(scheduler::FinishReason::kStop);
    if (!error_) error_ = event.error;
    c.timings = event.timings;
  }
  return entry;
}

void ResponseBuilder::add(const scheduler::RequestEvent& event, int32_t index) {
  record(event, index);
}

bool ResponseBuilder::finished() const {
  if (error_) return true;
  for (const Choice& c : choices_) {
    if (!c.finish) return false;
  }
  return true;
}

json ResponseBuilder::usage_json() const {
  // The prompt once (the samples share it), the completions summed: OpenAI's usage for n > 1.
  const int32_t prompt = choices_.front().timings.num_prompt_tokens;
  int32_t completion = 0;
  for (const Choice& c : choices_) completion += c.timings.num_generated_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json ResponseBuilder::envelope(const char* object) const {
  json out = {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_name_}};
  if (!options_.system_fingerprint.empty()) {
    out["system_fingerprint"] = options_.system_fingerprint;
  }
  return out;
}

json ResponseBuilder::logprobs_json(const std::vector<LogprobEntry>& entries) const {
  if (!want_logprobs_) return nullptr;
  if (endpoint_ == Endpoint::kCompletions) {
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
         offsets = json::array();
    for (const LogprobEntry& e : entries) {
      tokens.push_back(token_text_(e.token_id));
      if (e.null_logprobs) {
        token_logprobs.push_back(nullptr);
        top.push_back(nullptr);
        offsets.push_back(e.text_offset);
        continue;
      }
      token_logprobs.push_back(e.logprobs.logprob);
      json alternatives = json::object();
      for (const scheduler::TokenLogprob& t : e.logprobs.top) {
        alternatives[token_text_(t.token_id)] = t.logprob;
      }
      top.push_back(std::move(alternatives));
      offsets.push_back(e.text_offset);
    }
    return {{"tokens", tokens},
            {"token_logprobs", token_logprobs},
            {"top_logprobs", top},
            {"text_offset", offsets}};
  }
  const auto token_json = [&](int32_t id, float logprob) {
    const std::string text = token_text_(id);
    json bytes = json::array();
    for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
    return json{{"token", text}, {"logprob", logprob}, {"bytes", bytes}};
  };
  json content = json::array();
  for (const LogprobEntry& e : entries) {
    json item = token_json(e.token_id, e.logprobs.logprob);
    json top = json::array();
    for (const scheduler::TokenLogprob& t : e.logprobs.top) {
      top.push_back(token_json(t.token_id, t.logprob));
    }
    item["top_logprobs"] = std::move(top);
    content.push_back(std::move(item));
  }
  return {{"content", content}};
}

json ResponseBuilder::prompt_logprobs_json(const std::vector<LogprobEntry>& entries) const {
  const auto logprob = [&](int32_t id, float value, int32_t rank) {
    return json{{"logprob", value}, {"rank", rank}, {"decoded_token", token_text_(id)}};
  };
  json out = json::array();
  for (const LogprobEntry& e : entries) {
    if (e.null_logprobs) {
      out.push_back(nullptr);
      continue;
    }
    json tokens = json::object();
    for (size_t k = 0; k < e.logprobs.top.size(); ++k) {
      const scheduler::TokenLogprob& t = e.logprobs.top[k];
      tokens[std::to_string(t.token_id)] =
          logprob(t.token_id, t.logprob, static_cast<int32_t>(k + 1));
    }
    tokens[std::to_string(e.token_id)] = logprob(e.token_id, e.logprobs.logprob, e.logprobs.rank);
    out.push_back(std::move(tokens));
  }
  return out;
}

const char* ResponseBuilder::finish_name(const Choice& choice) {
  const scheduler::FinishReason reason = choice.finish.value_or(scheduler::FinishReason::kStop);
  if (choice.num_tool_calls > 0 && reason == scheduler::FinishReason::kStop) return "tool_calls";
  return finish_reason_name(reason);
}

std::string ResponseBuilder::response() const {
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    const scheduler::FinishReason reason = c.finish.value_or(scheduler::FinishReason::kStop);
    json choice = {{"index", i},
                   {"logprobs", logprobs_json(c.logprobs)},
                   {"finish_reason", finish_reason_name(reason)}};
    if (endpoint_ == Endpoint::kCompletions) {
      choice["text"] = c.text;
      if (options_.prompt_logprobs >= 0) choice["prompt_logprobs"] = prompt_logprobs_json(c.prompt);
    } else {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    }
    if (options_.tool_calls) {  // each sample's own calls
      const ToolCallParser::Delta parsed = parse_tool_calls(c.text);
      if (!parsed.calls.empty()) {
        choice["message"]["content"] = tool_content(parsed.content);
        choice["message"]["tool_calls"] = tool_calls_json(parsed.calls, 0, false);
        if (reason == scheduler::FinishReason::kStop) choice["finish_reason"] = "tool_calls";
      }
    }
    choices.push_back(std::move(choice));
  }
  json out = envelope(endpoint_ == Endpoint::kCompletions ? "text_completion" : "chat.completion");
  out["choices"] = std::move(choices);
  if (endpoint_ == Endpoint::kChatCompletions && options_.prompt_logprobs >= 0) {
    out["prompt_logprobs"] = prompt_logprobs_json(choices_.front().prompt);
  }
  out["usage"] = usage_json();
  return dump(out);
}

json ResponseBuilder::chunk(int32_t index, const std::string& text,
                            const std::vector<LogprobEntry>& logprobs, const char* finish_reason) {
  json choice = {{"index", index},
                 {"logprobs", logprobs.empty() ? json(nullptr) : logprobs_json(logprobs)},
                 {"finish_reason", finish_reason == nullptr ? json(nullptr) : json(finish_reason)}};
  if (endpoint_ == Endpoint::kCompletions) {
    choice["text"] = text;
  } else {
    bool& role_sent = choices_.at(static_cast<size_t>(index)).role_sent;
    json delta = json::object();
    if (!role_sent) delta["role"] = "assistant";
    if (!text.empty() || !role_sent) delta["content"] = text;
    role_sent = true;
    choice["delta"] = std::move(delta);
  }
  json out =
      envelope(endpoint_ == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk");
  out["choices"] = json::array({std::move(choice)});
  return out;
}

std::string ResponseBuilder::stream_event(const scheduler::RequestEvent& event, bool include_usage,
                                          int32_t index) {
  if (finished()) return "";  // after an error: the stream has ended
  std::string out;
  Choice& c = choices_.at(static_cast<size_t>(index));
  const auto send = [&](json data) {
    if (include_usage) data["usage"] = nullptr;
    out += sse(data);
  };
  if (endpoint_ == Endpoint::kChatCompletions && !c.role_sent) {
    send(chunk(index, "", {}, nullptr));  // the role, as OpenAI sends it first
  }
  if (endpoint_ == Endpoint::kCompletions && !options_.echo.empty() && !c.echo_sent) {
    // The prompt first, as vLLM streams echo (with its logprobs when asked: the first event
    // carries them).
    send(chunk(index, options_.echo,
               options_.echo_logprobs >= 0 ? prompt_entries(event, options_.echo_logprobs)
                                           : std::vector<LogprobEntry>{},
               nullptr));
    c.echo_sent = true;
  }
  const std::optional<LogprobEntry> entry = record(event, index);
  std::vector<LogprobEntry> entries;
  if (entry) entries.push_back(*entry);
  const bool finished_choice = event.kind == scheduler::RequestEvent::Kind::kFinished;
  std::string text = event.text;
  if (options_.tool_calls) {
    // Content streams as it comes, except a possible "<tool_call>" (held back); a call goes out
    // as one delta once its </tool_call> arrived. Each sample has its own parser.
    ToolCallParser::Delta delta = c.tool_parser.push(text);
    if (finished_choice) {
      ToolCallParser::Delta tail = c.tool_parser.flush();
      delta.content += tail.content;
      for (ToolCall& call : tail.calls) delta.calls.push_back(std::move(call));
    }
    text = std::move(delta.content);
    if (!delta.calls.empty()) {
      json data = chunk(index, "", {}, nullptr);
      data["choices"][0]["delta"] = {
          {"tool_calls", tool_calls_json(delta.calls, c.num_tool_calls, true)}};
      c.num_tool_calls += static_cast<int32_t>(delta.calls.size());
      send(std::move(data));
    }
  }
  if (finished_choice && event.error) {
    // The engine failed the request mid-stream: the status line is gone, so the error travels
    // as an event with OpenAI's error body, then the stream ends as usual.
    const HttpError mapped = http_error(event.error->kind);
    return out + "data: " + openai_error_body(event.error->message, mapped.type, mapped.status) +
           "\n\ndata: [DONE]\n\n";
  }
  if (!text.empty() || !entries.empty() || finished_choice) {
    send(chunk(index, text, entries, finished_choice ? finish_name(c) : nullptr));
  }
  if (finished()) {
    if (include_usage) {
      json data = envelope(endpoint_ == Endpoint::kCompletions ? "text_completion"
                                                               : "chat.completion.chunk");
      data["choices"] = json::array();
      data["usage"] = usage_json();
      out += sse(data);
    }
    out += "data: [DONE]\n\n";
  }
  return out;
}

}  // namespace lightserve::frontends::openai
