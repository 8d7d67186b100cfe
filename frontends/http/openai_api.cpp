#include "frontends/http/openai_api.h"

#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "frontends/common/error_mapping.h"

namespace lightserve::frontends::openai {
namespace {

using json = nlohmann::json;
using Problem = std::optional<std::string>;  // a field's error message, nullopt when fine

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

// The body as a JSON object, or the parser's message without its exception prefix.
Result<json> parse_object(std::string_view body) {
  json root;
  try {
    root = json::parse(body);
  } catch (const json::exception& e) {
    // parse_error for bad syntax, out_of_range for a number beyond a double (1e309): both 400.
    std::string what = e.what();
    if (const size_t pos = what.find("] ");
        what.rfind("[json.exception", 0) == 0 && pos != std::string::npos) {
      what = what.substr(pos + 2);
    }
    return Error{"invalid JSON in the request body: " + what};
  }
  if (!root.is_object()) {
    return Error{std::string("the request body must be a JSON object, got ") + root.type_name()};
  }
  return root;
}

std::string quoted(const std::string& name) {
  return "'" + name + "'";
}

std::string wrong_type(const std::string& name, const char* expected, const json& value) {
  return quoted(name) + " must be " + expected + ", got " + value.type_name();
}

Problem problem_of(const Status& status) {
  if (status.ok()) return std::nullopt;
  return status.message();
}

// A present, non-null member, or null.
const json* member(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

// The readers below check JSON types only; frontends::translate checks the values.

Problem read_bool(const json& object, const char* key, bool& out) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean()) return wrong_type(key, "a boolean", *value);
  out = value->get<bool>();
  return std::nullopt;
}

Problem to_wire_int(const std::string& name, const json& value, WireInt& out) {
  if (!value.is_number_integer()) return wrong_type(name, "an integer", value);
  out = value.is_number_unsigned() ? WireInt::of_unsigned(value.get<uint64_t>())
                                   : WireInt::of(value.get<int64_t>());
  return std::nullopt;
}

Problem read_int(const json& object, const char* key, std::optional<WireInt>& out) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  WireInt v;
  if (Problem p = to_wire_int(key, *value, v)) return p;
  out = v;
  return std::nullopt;
}

Problem read_number(const json& object, const char* key, std::optional<double>& out) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_number()) return wrong_type(key, "a number", *value);
  out = value->get<double>();
  return std::nullopt;
}

Problem read_string(const json& object, const char* key, std::optional<std::string>& out) {
  const json* value = member(object, key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_string()) return wrong_type(key, "a string", *value);
  out = value->get<std::string>();
  return std::nullopt;
}

Problem read_token_ids(const std::string& name, const json& value, std::vector<WireInt>& out) {
  if (!value.is_array()) return wrong_type(name, "an array of token ids", value);
  out.clear();
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    WireInt id;
    if (Problem p = to_wire_int(name + "[" + std::to_string(i) + "]", value[i], id)) return p;
    out.push_back(id);
  }
  return std::nullopt;
}

Problem read_prompt(const json& body, RequestFields& fields) {
  const json* prompt = member(body, "prompt");
  if (prompt == nullptr) return std::string("'prompt' is required");
  if (prompt->is_string()) {
    fields.prompt_text = prompt->get<std::string>();
    return std::nullopt;
  }
  if (!prompt->is_array())
    return wrong_type("prompt", "a string or an array of token ids", *prompt);
  for (const json& element : *prompt) {
    if (element.is_string() || element.is_array()) {
      return std::string("'prompt' as an array of ") +
             (element.is_string() ? "strings" : "token arrays") +
             " (a batch of prompts) is not supported: send one prompt per request";
    }
  }
  return read_token_ids("prompt", *prompt, fields.prompt_ids.emplace());
}

Problem read_content(const std::string& name, const json& content, std::string& out) {
  if (content.is_string()) {
    out = content.get<std::string>();
    return std::nullopt;
  }
  if (!content.is_array()) return wrong_type(name, "a string or an array of text parts", content);
  out.clear();
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string part_name = name + "[" + std::to_string(i) + "]";
    const json& part = content[i];
    if (!part.is_object()) return wrong_type(part_name, "an object", part);
    const json* type = member(part, "type");
    if (type == nullptr || !type->is_string()) {
      return quoted(part_name + ".type") + " must be a string";
    }
    if (type->get_ref<const std::string&>() != "text") {
      return quoted(part_name + ".type") + " '" + type->get<std::string>() +
             "' is not supported: only \"text\" parts";
    }
    const json* text = member(part, "text");
    if (text == nullptr || !text->is_string()) {
      return quoted(part_name + ".text") + " must be a string";
    }
    out += text->get_ref<const std::string&>();
  }
  return std::nullopt;
}

// The messages' shape; frontends::check_messages checks the roles.
Problem read_messages(const json& body, std::vector<model::ChatMessage>& out) {
  const json* messages = member(body, "messages");
  if (messages == nullptr) return std::string("'messages' is required");
  if (!messages->is_array()) return wrong_type("messages", "an array", *messages);
  out.clear();
  for (size_t i = 0; i < messages->size(); ++i) {
    const std::string name = "messages[" + std::to_string(i) + "]";
    const json& message = (*messages)[i];
    if (!message.is_object()) return wrong_type(name, "an object", message);
    if (is_tool_message(message)) {  // tool_calls.h: rendered in the Hermes syntax
      model::ChatMessage parsed;
      if (Problem p = read_tool_message(name, message, parsed)) return p;
      out.push_back(std::move(parsed));
      continue;
    }
    const json* role = member(message, "role");
    if (role == nullptr) return quoted(name + ".role") + " is required";
    if (!role->is_string()) return wrong_type(name + ".role", "a string", *role);
    const json* content = member(message, "content");
    if (content == nullptr) return quoted(name + ".content") + " is required";
    model::ChatMessage parsed{role->get<std::string>(), ""};
    if (Problem p = read_content(name + ".content", *content, parsed.content)) return p;
    out.push_back(std::move(parsed));
  }
  return std::nullopt;
}

// A string or an array of strings.
Problem read_stop(const json& body, std::vector<std::string>& out) {
  const json* stop = member(body, "stop");
  if (stop == nullptr) return std::nullopt;
  if (stop->is_string()) {
    if (stop->get_ref<const std::string&>().empty()) return std::string("'stop' is empty");
    out.push_back(stop->get<std::string>());
    return std::nullopt;
  }
  if (!stop->is_array()) return wrong_type("stop", "a string or an array of strings", *stop);
  for (size_t i = 0; i < stop->size(); ++i) {
    const json& item = (*stop)[i];
    if (!item.is_string()) return wrong_type("stop[" + std::to_string(i) + "]", "a string", item);
    out.push_back(item.get<std::string>());
  }
  return std::nullopt;
}

// Fields OpenAI defines that lightserve does not implement: refused unless they ask for nothing.
Problem refuse_unsupported(const json& body, Endpoint endpoint) {
  for (const char* key : {"n", "best_of"}) {
    std::optional<WireInt> count;
    if (Problem p = read_int(body, key, count)) return p;
    if (!count) continue;
    if (Problem p = problem_of(check_range(key, *count, 1, std::numeric_limits<int32_t>::max()))) {
      return p;
    }
    if (count->get() != 1) {
      return quoted(key) + " = " + count->str() + " is not supported: only " + key + " = 1";
    }
  }
  // vLLM's and llama.cpp's extras that lightserve does not implement: refused by name unless
  // they ask for nothing, never silently ignored.
  // (The constraint fields and tools are read by read_structured_output, tool_calls.h.)
  for (const char* key : {"guided_whitespace_pattern",
                          "structural_tag",
                          "chat_template_kwargs",
                          "chat_template",
                          "documents",
                          "prompt_logprobs",
                          "allowed_token_ids",
                          "bad_words",
                          "truncate_prompt_tokens",
                          "use_beam_search",
                          "length_penalty",
                          "typical_p",
                          "tfs_z",
                          "mirostat",
                          "mirostat_tau",
                          "mirostat_eta",
                          "dry_multiplier",
                          "xtc_probability",
                          "top_n_sigma",
                          "n_probs",
                          "samplers",
                          "continue_final_message",
                          "return_tokens_as_token_ids",
                          "include_stop_str_in_output"}) {
    const json* value = member(body, key);
    const bool asks_nothing =
        value == nullptr || (value->is_boolean() && !value->get<bool>()) ||
        ((value->is_array() || value->is_object() || value->is_string()) && value->empty());
    if (!asks_nothing) return quoted(key) + " is not supported by this server";
  }
  bool skip_special = true;  // vLLM's default; false asks for control tokens in the text
  if (Problem p = read_bool(body, "skip_special_tokens", skip_special)) return p;
  if (!skip_special) return std::string("'skip_special_tokens' = false is not supported");
  for (const char* key : {"functions", "function_call"}) {
    if (const json* value = member(body, key); value != nullptr && !value->empty()) {
      return quoted(key) + " (the deprecated function calling) is not supported: use 'tools'";
    }
  }
  if (endpoint == Endpoint::kCompletions) {
    bool echo = false;
    if (Problem p = read_bool(body, "echo", echo)) return p;
    if (echo) return std::string("'echo' is not supported");
    std::optional<std::string> suffix;
    if (Problem p = read_string(body, "suffix", suffix)) return p;
    if (suffix && !suffix->empty()) return std::string("'suffix' is not supported");
  }
  return std::nullopt;
}

Problem read_sampling(const json& body, RequestFields& f) {
  const std::pair<const char*, std::optional<double>*> numbers[] = {
      {"temperature", &f.temperature},
      {"top_p", &f.top_p},
      {"min_p", &f.min_p},
      {"presence_penalty", &f.presence_penalty},
      {"frequency_penalty", &f.frequency_penalty},
      {"repetition_penalty", &f.repetition_penalty},
  };
  for (const auto& [key, out] : numbers) {
    if (Problem p = read_number(body, key, *out)) return p;
  }
  if (Problem p = read_int(body, "top_k", f.top_k)) return p;
  if (Problem p = read_int(body, "min_tokens", f.min_tokens)) return p;
  if (const json* bias = member(body, "logit_bias")) {
    // {"token id": bias}, as OpenAI: the keys are decimal strings.
    if (!bias->is_object()) return wrong_type("logit_bias", "an object", *bias);
    for (const auto& [key, value] : bias->items()) {
      const std::string name = "logit_bias[" + key + "]";
      uint64_t id = 0;
      const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (key.empty() || ec != std::errc() || end != key.data() + key.size()) {
        return quoted("logit_bias") + " key '" + key + "' is not a token id";
      }
      if (!value.is_number()) return wrong_type(name, "a number", value);
      f.logit_bias.emplace_back(WireInt::of_unsigned(id), value.get<double>());
    }
  }
  if (const json* seed = member(body, "seed")) {
    if (!seed->is_number_integer()) return wrong_type("seed", "an integer", *seed);
    f.seed = seed->is_number_unsigned() ? seed->get<uint64_t>()
                                        : static_cast<uint64_t>(seed->get<int64_t>());
  }
  return std::nullopt;
}

// Completions: "logprobs": N. Chat: "logprobs": true with "top_logprobs": N.
Problem read_logprobs(const json& body, Endpoint endpoint, RequestFields& f) {
  if (endpoint == Endpoint::kCompletions) return read_int(body, "logprobs", f.logprobs);
  bool wanted = false;
  if (Problem p = read_bool(body, "logprobs", wanted)) return p;
  std::optional<WireInt> count;
  if (Problem p = read_int(body, "top_logprobs", count)) return p;
  if (count && !wanted) return std::string("'top_logprobs' needs 'logprobs': true");
  if (wanted) f.logprobs = count.value_or(WireInt::of(0));
  f.logprobs_field = "top_logprobs";
  return std::nullopt;
}

Problem read_stream(const json& body, ParsedRequest& out) {
  if (Problem p = read_bool(body, "stream", out.stream)) return p;
  const json* options = member(body, "stream_options");
  if (options == nullptr) return std::nullopt;
  if (!out.stream) return std::string("'stream_options' is only allowed with 'stream': true");
  if (!options->is_object()) return wrong_type("stream_options", "an object", *options);
  if (const json* usage = member(*options, "include_usage")) {
    if (!usage->is_boolean()) {
      return wrong_type("stream_options.include_usage", "a boolean", *usage);
    }
    out.include_usage = usage->get<bool>();
  }
  return std::nullopt;
}

Problem read_lighttransfer(const json& body, RequestFields& f) {
  const json* lt = member(body, "lighttransfer");
  if (lt == nullptr) return std::nullopt;
  if (!lt->is_object()) return wrong_type("lighttransfer", "an object", *lt);
  for (const auto& [key, value] : lt->items()) {
    if (key != "mode") return "'lighttransfer." + key + "' is not a known field (only 'mode')";
  }
  std::optional<std::string> mode;
  if (Problem p = read_string(*lt, "mode", mode)) return "'lighttransfer." + p->substr(1);
  if (!mode) return std::nullopt;
  // "hybrid" and "test" are older names of the server's setting.
  if (*mode == "default" || *mode == "hybrid" || *mode == "test") {
    f.lighttransfer = serving::LightTransferOverride::kServerDefault;
  } else if (*mode == "full") {
    f.lighttransfer = serving::LightTransferOverride::kFull;
  } else if (*mode == "streaming") {
    f.lighttransfer = serving::LightTransferOverride::kStreaming;
  } else {
    return "'lighttransfer.mode' must be one of default, full, streaming, got '" + *mode + "'";
  }
  return std::nullopt;
}

// The constraint fields and tools (tool_calls.h), read from the body parsed again keeping the
// order of keys, when it has any of them.
Problem read_constraints(const json& body, std::string_view raw_body, Endpoint endpoint,
                         RequestFields& f, bool& tool_calls) {
  bool any = false;
  for (const char* key : {"response_format", "guided_json", "guided_regex", "guided_choice",
                          "guided_grammar", "grammar", "json_schema", "guided_decoding_backend",
                          "tools", "tool_choice", "parallel_tool_calls"}) {
    any = any || body.contains(key);
  }
  if (!any) return std::nullopt;
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(raw_body);
  return read_structured_output(ordered, endpoint == Endpoint::kChatCompletions, f, tool_calls);
}

Problem read_generate(const json& body, std::string_view raw_body, Endpoint endpoint,
                      const ApiContext& context, ParsedRequest& out) {
  RequestFields f;
  if (Problem p = read_string(body, "model", f.model)) return p;
  if (endpoint == Endpoint::kCompletions) {
    if (Problem p = read_prompt(body, f)) return p;
  } else {
    if (Problem p = read_messages(body, f.messages.emplace())) return p;
    if (Problem p = read_bool(body, "add_generation_prompt", f.add_generation_prompt)) return p;
  }
  if (Problem p = refuse_unsupported(body, endpoint)) return p;
  if (Problem p = read_constraints(body, raw_body, endpoint, f, out.tool_calls)) return p;
  std::optional<WireInt> max_completion_tokens;
  if (Problem p = read_int(body, "max_tokens", f.max_tokens)) return p;
  if (Problem p = read_int(body, "max_completion_tokens", max_completion_tokens)) return p;
  if (Problem p = read_sampling(body, f)) return p;
  if (Problem p = read_stop(body, f.stop)) return p;
  if (const json* ids = member(body, "stop_token_ids")) {
    if (Problem p = read_token_ids("stop_token_ids", *ids, f.stop_token_ids)) return p;
  }
  if (Problem p = read_bool(body, "ignore_eos", f.ignore_eos)) return p;
  if (Problem p = read_logprobs(body, endpoint, f)) return p;
  if (Problem p = read_int(body, "priority", f.priority)) return p;
  if (Problem p = read_stream(body, out)) return p;
  if (Problem p = read_lighttransfer(body, f)) return p;
  std::optional<std::string> user;
  if (Problem p = read_string(body, "user", user)) return p;

  if (max_completion_tokens) {  // the newer name wins; checked under its own name
    if (Problem p = problem_of(check_range("max_completion_tokens", *max_completion_tokens, 1,
                                           std::numeric_limits<int32_t>::max()))) {
      return p;
    }
    f.max_tokens = max_completion_tokens;
  }
  Result<serving::GenerateInput> input = translate(f, context);
  if (!input) return input.error().message;
  out.input = std::move(input).value();
  return std::nullopt;
}

}  // namespace

Result<ParsedRequest> parse_generate_request(std::string_view body, Endpoint endpoint,
                                             const ApiContext& context) {
  Result<json> root = parse_object(body);
  if (!root) return root.error();
  ParsedRequest out;
  if (Problem p = read_generate(root.value(), body, endpoint, context, out)) return Error{*p};
  return out;
}

Result<TokenizeRequest> parse_tokenize_request(std::string_view body, const ApiContext& context) {
  Result<json> root = parse_object(body);
  if (!root) return root.error();
  const json& object = root.value();
  TokenizeRequest out;
  std::optional<std::string> model;
  Problem problem = read_string(object, "model", model);
  if (!problem) problem = problem_of(check_model(model, context));
  if (!problem) problem = read_bool(object, "add_special_tokens", out.add_special_tokens);
  if (!problem) problem = read_bool(object, "add_generation_prompt", out.add_generation_prompt);
  bool token_strs = false;
  if (!problem) problem = read_bool(object, "return_token_strs", token_strs);
  if (!problem && token_strs) problem = "'return_token_strs' is not supported";
  if (!problem && member(object, "messages") != nullptr) {
    std::vector<model::ChatMessage> messages;
    problem = read_messages(object, messages);
    if (!problem) problem = problem_of(check_messages(messages));
    out.messages = std::move(messages);
  } else if (!problem) {
    problem = read_string(object, "prompt", out.prompt);
    if (!problem && !out.prompt) problem = "'prompt' (a string) or 'messages' is required";
  }
  if (problem) return Error{*problem};
  return out;
}

std::string tokenize_response(const std::vector<int32_t>& tokens, int32_t max_model_len) {
  return dump({{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", max_model_len}});
}

Result<std::vector<int32_t>> parse_detokenize_request(std::string_view body,
                                                      const ApiContext& context) {
  Result<json> root = parse_object(body);
  if (!root) return root.error();
  std::optional<std::string> model;
  if (Problem p = read_string(root.value(), "model", model)) return Error{*p};
  if (Status s = check_model(model, context); !s.ok()) return Error{s.message()};
  const json* tokens = member(root.value(), "tokens");
  if (tokens == nullptr) return Error{"'tokens' is required"};
  std::vector<WireInt> ids;
  if (Problem p = read_token_ids("tokens", *tokens, ids)) return Error{*p};
  return check_token_ids(ids, "tokens", context);
}

std::string detokenize_response(const std::string& text) {
  return dump({{"prompt", text}});
}

namespace {
json model_json(const serving::ModelInfo& info, int32_t max_model_len, int64_t created) {
  return {{"id", info.name},          {"object", "model"}, {"created", created},
          {"owned_by", "lightserve"}, {"root", info.name}, {"max_model_len", max_model_len}};
}
}  // namespace

std::string model_object(const serving::ModelInfo& info, int32_t max_model_len, int64_t created) {
  return dump(model_json(info, max_model_len, created));
}

std::string models_response(const serving::ModelInfo& info, int32_t max_model_len,
                            int64_t created) {
  return dump(
      {{"object", "list"}, {"data", json::array({model_json(info, max_model_len, created)})}});
}

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
                                 bool want_logprobs, int64_t created)
    : endpoint_(endpoint),
      model_name_(std::move(model_name)),
      token_text_(std::move(token_text)),
      want_logprobs_(want_logprobs),
      created_(created),
      id_((endpoint == Endpoint::kCompletions ? "cmpl-" : "chatcmpl-") + random_hex(24)) {}

std::optional<ResponseBuilder::LogprobEntry> ResponseBuilder::record(
    const scheduler::RequestEvent& event) {
  std::optional<LogprobEntry> entry;
  if (event.kind == scheduler::RequestEvent::Kind::kToken && event.logprobs && want_logprobs_) {
    entry = LogprobEntry{event.token_id, *event.logprobs, static_cast<int32_t>(text_.size())};
    logprobs_.push_back(*entry);
  }
  text_ += event.text;
  if (event.kind == scheduler::RequestEvent::Kind::kFinished) {
    finish_ = event.finish_reason.value_or(scheduler::FinishReason::kStop);
    error_ = event.error;
    timings_ = event.timings;
  }
  return entry;
}

void ResponseBuilder::add(const scheduler::RequestEvent& event) {
  record(event);
}

json ResponseBuilder::usage_json() const {
  return {{"prompt_tokens", timings_.num_prompt_tokens},
          {"completion_tokens", timings_.num_generated_tokens},
          {"total_tokens", timings_.num_prompt_tokens + timings_.num_generated_tokens}};
}

json ResponseBuilder::logprobs_json(const std::vector<LogprobEntry>& entries) const {
  if (!want_logprobs_) return nullptr;
  if (endpoint_ == Endpoint::kCompletions) {
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
         offsets = json::array();
    for (const LogprobEntry& e : entries) {
      tokens.push_back(token_text_(e.token_id));
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

namespace {
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

void ResponseBuilder::enable_tool_calls() {
  tool_parser_ = std::make_unique<ToolCallParser>();
}

const char* ResponseBuilder::finish_name() const {
  const scheduler::FinishReason reason = finish_.value_or(scheduler::FinishReason::kStop);
  if (num_tool_calls_ > 0 && reason == scheduler::FinishReason::kStop) return "tool_calls";
  return finish_reason_name(reason);
}

std::string ResponseBuilder::response() const {
  json choice = {
      {"index", 0},
      {"logprobs", logprobs_json(logprobs_)},
      {"finish_reason", finish_reason_name(finish_.value_or(scheduler::FinishReason::kStop))}};
  if (endpoint_ == Endpoint::kCompletions) {
    choice["text"] = text_;
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", text_}};
    if (tool_parser_) {
      const ToolCallParser::Delta parsed = parse_tool_calls(text_);
      if (!parsed.calls.empty()) {
        choice["message"]["content"] = tool_content(parsed.content);
        choice["message"]["tool_calls"] = tool_calls_json(parsed.calls, 0, false);
        if (finish_.value_or(scheduler::FinishReason::kStop) == scheduler::FinishReason::kStop) {
          choice["finish_reason"] = "tool_calls";
        }
      }
    }
  }
  return dump(
      {{"id", id_},
       {"object", endpoint_ == Endpoint::kCompletions ? "text_completion" : "chat.completion"},
       {"created", created_},
       {"model", model_name_},
       {"choices", json::array({std::move(choice)})},
       {"usage", usage_json()}});
}

json ResponseBuilder::chunk(const std::string& text, const std::vector<LogprobEntry>& logprobs,
                            const char* finish_reason) {
  json choice = {{"index", 0},
                 {"logprobs", logprobs.empty() ? json(nullptr) : logprobs_json(logprobs)},
                 {"finish_reason", finish_reason == nullptr ? json(nullptr) : json(finish_reason)}};
  if (endpoint_ == Endpoint::kCompletions) {
    choice["text"] = text;
  } else {
    json delta = json::object();
    if (!role_sent_) delta["role"] = "assistant";
    if (!text.empty() || !role_sent_) delta["content"] = text;
    role_sent_ = true;
    choice["delta"] = std::move(delta);
  }
  return {
      {"id", id_},
      {"object", endpoint_ == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk"},
      {"created", created_},
      {"model", model_name_},
      {"choices", json::array({std::move(choice)})}};
}

namespace {
std::string sse(const json& data) {
  return "data: " + dump(data) + "\n\n";
}
}  // namespace

std::string ResponseBuilder::stream_event(const scheduler::RequestEvent& event,
                                          bool include_usage) {
  std::string out;
  if (endpoint_ == Endpoint::kChatCompletions && !role_sent_) {
    json first = chunk("", {}, nullptr);  // the role, as OpenAI sends it first
    if (include_usage) first["usage"] = nullptr;
    out += sse(first);
  }
  const std::optional<LogprobEntry> entry = record(event);
  std::vector<LogprobEntry> entries;
  if (entry) entries.push_back(*entry);
  const bool finished = event.kind == scheduler::RequestEvent::Kind::kFinished;
  std::string text = event.text;
  if (tool_parser_) {
    // Content streams as it comes, except a possible "<tool_call>" (held back); a call goes out
    // as one delta once its </tool_call> arrived.
    ToolCallParser::Delta delta = tool_parser_->push(text);
    if (finished) {
      ToolCallParser::Delta tail = tool_parser_->flush();
      delta.content += tail.content;
      for (ToolCall& c : tail.calls) delta.calls.push_back(std::move(c));
    }
    text = std::move(delta.content);
    if (!delta.calls.empty()) {
      json data = chunk("", {}, nullptr);
      data["choices"][0]["delta"] = {
          {"tool_calls", tool_calls_json(delta.calls, num_tool_calls_, true)}};
      if (include_usage) data["usage"] = nullptr;
      num_tool_calls_ += static_cast<int32_t>(delta.calls.size());
      out += sse(data);
    }
  }
  if (finished && error_) {
    // The engine failed the request mid-stream: the status line is gone, so the error travels
    // as an event with OpenAI's error body, then the stream ends as usual.
    const HttpError mapped = http_error(error_->kind);
    return out + "data: " + openai_error_body(error_->message, mapped.type, mapped.status) +
           "\n\ndata: [DONE]\n\n";
  }
  if (!text.empty() || !entries.empty() || finished) {
    json data = chunk(text, entries, finished ? finish_name() : nullptr);
    if (include_usage) data["usage"] = nullptr;
    out += sse(data);
  }
  if (finished) {
    if (include_usage) {
      out += sse({{"id", id_},
                  {"object", endpoint_ == Endpoint::kCompletions ? "text_completion"
                                                                 : "chat.completion.chunk"},
                  {"created", created_},
                  {"model", model_name_},
                  {"choices", json::array()},
                  {"usage", usage_json()}});
    }
    out += "data: [DONE]\n\n";
  }
  return out;
}

}  // namespace lightserve::frontends::openai
