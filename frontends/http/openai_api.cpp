#include "frontends/http/openai_api.h"

#include <algorithm>
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
  // vLLM's and llama.cpp's extras that lightserve does not implement: refused by name unless
  // they ask for nothing, never silently ignored.
  // (The constraint fields and tools are read by read_structured_output, tool_calls.h.)
  for (const char* key : {"guided_whitespace_pattern",
                          "structural_tag",
                          "chat_template",
                          "documents",
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
    std::optional<std::string> suffix;
    if (Problem p = read_string(body, "suffix", suffix)) return p;
    if (suffix && !suffix->empty()) return std::string("'suffix' is not supported");
  }
  return std::nullopt;
}

// n, best_of, echo and the chat rendering fields (issue 16); translate() checks the values.
Problem read_chat_options(const json& body, RequestFields& f) {
  if (Problem p = read_bool(body, "continue_final_message", f.continue_final_message)) return p;
  const json* kwargs = member(body, "chat_template_kwargs");
  if (kwargs == nullptr) return std::nullopt;
  if (!kwargs->is_object()) return wrong_type("chat_template_kwargs", "an object", *kwargs);
  for (const auto& [key, value] : kwargs->items()) {
    // vLLM merges these two into the template's variables, where they override the fields.
    if (key == "add_generation_prompt" || key == "continue_final_message") {
      if (!value.is_boolean()) return wrong_type("chat_template_kwargs." + key, "a boolean", value);
      (key == "add_generation_prompt" ? f.add_generation_prompt : f.continue_final_message) =
          value.get<bool>();
      continue;
    }
    f.chat_template_kwargs.emplace_back(key,
                                        value.is_string() ? value.get<std::string>() : dump(value));
  }
  return std::nullopt;
}

// The OpenAI and vLLM request fields found in neither reader nor refuse_unsupported (audited
// against OpenAI's completions / chat create parameters and vLLM's extra parameters): refused
// when they ask for anything. Identifiers with no effect on the output (user, safety_identifier,
// prompt_cache_key) are accepted.
Problem refuse_unimplemented_extras(const json& body, Endpoint endpoint) {
  for (const char* key : {"audio", "prediction", "reasoning_effort", "verbosity", "metadata",
                          "store", "web_search_options", "logits_processors", "mm_processor_kwargs",
                          "cache_salt", "kv_transfer_params", "vllm_xargs", "return_token_ids",
                          "request_id", "spaces_between_special_tokens"}) {
    const json* value = member(body, key);
    if (value == nullptr) continue;
    const std::string_view name = key;
    bool asks_nothing = *value == false || (value->is_object() && value->empty());
    if (name == "spaces_between_special_tokens") asks_nothing = *value == true;  // the default
    if (name == "web_search_options") asks_nothing = false;  // {} turns the search on
    if (!asks_nothing) return quoted(key) + " is not supported by this server";
  }
  if (const json* modalities = member(body, "modalities");
      modalities != nullptr && *modalities != json::array({"text"})) {
    return std::string("'modalities' other than [\"text\"] is not supported");
  }
  if (const json* tier = member(body, "service_tier");
      tier != nullptr && *tier != "auto" && *tier != "default") {
    return std::string("'service_tier' other than \"auto\" or \"default\" is not supported");
  }
  // vLLM's add_special_tokens: lightserve adds the model's BOS to a prompt text and nothing to
  // a rendered chat (its template holds its own), vLLM's defaults for each endpoint.
  bool add_special = endpoint == Endpoint::kCompletions;
  if (Problem p = read_bool(body, "add_special_tokens", add_special)) return p;
  if (add_special != (endpoint == Endpoint::kCompletions)) {
    return "'add_special_tokens' = " + std::string(add_special ? "true" : "false") +
           " is not supported on this endpoint";
  }
  if (const json* options = member(body, "stream_options"); options && options->is_object()) {
    for (const auto& [key, value] : options->items()) {
      if (key != "include_usage" && !value.is_null() && value != false) {
        return "'stream_options." + key + "' is not supported";
      }
    }
  }
  std::optional<std::string> id;
  for (const char* key : {"user", "safety_identifier", "prompt_cache_key"}) {
    if (Problem p = read_string(body, key, id)) return p;
  }
  return std::nullopt;
}

Problem read_samples_and_echo(const json& body, RequestFields& f) {
  if (Problem p = read_int(body, "n", f.n)) return p;
  if (Problem p = read_int(body, "best_of", f.best_of)) return p;
  if (Problem p = read_int(body, "prompt_logprobs", f.prompt_logprobs)) return p;
  return read_bool(body, "echo", f.echo);
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
  if (Problem p = read_chat_options(body, f)) return p;
  if (Problem p = read_samples_and_echo(body, f)) return p;
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
  if (out.stream && f.prompt_logprobs) {  // as vLLM: the list is a whole-response field
    return std::string("'prompt_logprobs' is not available with 'stream': true");
  }
  if (Problem p = read_lighttransfer(body, f)) return p;
  if (Problem p = refuse_unimplemented_extras(body, endpoint)) return p;

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
  if (!problem) problem = read_bool(object, "return_token_strs", out.return_token_strs);
  RequestFields chat;  // continue_final_message and chat_template_kwargs, read as for chat
  chat.add_generation_prompt = out.add_generation_prompt;
  if (!problem) problem = read_chat_options(object, chat);
  out.add_generation_prompt = chat.add_generation_prompt;
  out.continue_final_message = chat.continue_final_message;
  out.chat_template_kwargs = std::move(chat.chat_template_kwargs);
  if (!problem && member(object, "messages") == nullptr &&
      (out.continue_final_message || !out.chat_template_kwargs.empty())) {
    problem = std::string(out.continue_final_message ? "'continue_final_message'"
                                                     : "'chat_template_kwargs'") +
              " needs 'messages'";
  }
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

std::string tokenize_response(const std::vector<int32_t>& tokens, int32_t max_model_len,
                              const TokenText* token_strs) {
  json out = {{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", max_model_len}};
  if (token_strs != nullptr) {
    json strs = json::array();
    for (const int32_t id : tokens) strs.push_back((*token_strs)(id));
    out["token_strs"] = std::move(strs);
  }
  return dump(out);
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

}  // namespace lightserve::frontends::openai
