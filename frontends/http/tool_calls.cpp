#include "frontends/http/tool_calls.h"

#include <nlohmann/json.hpp>
#include <utility>

namespace lightserve::frontends::openai {
namespace {

// Ordered: a schema's properties keep the client's order (XGrammar generates them in that order,
// as OpenAI does), and so do the tool definitions shown to the model.
using json = nlohmann::ordered_json;
using Problem = std::optional<std::string>;

constexpr std::string_view kCallBegin = "<tool_call>";
constexpr std::string_view kCallEnd = "</tool_call>";

template <typename Json>
std::string dump(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string in_quotes(const std::string& name) {
  return "'" + name + "'";
}

template <typename Json>
const Json* member(const Json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string call_id() {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "call_";
  uint64_t bits = 0;
  for (int i = 0; i < 24; ++i) {
    if (i % 16 == 0) bits = random_seed();
    out += kDigits[bits & 15];
    bits >>= 4;
  }
  return out;
}

// One constraint field: its name and the spec it asks for, nullopt when it asks for nothing.
struct Asked {
  std::string field;
  sampling::ConstraintSpec spec;
};

Problem read_response_format(const json& body, std::vector<Asked>& asked) {
  const json* format = member(body, "response_format");
  if (format == nullptr) return std::nullopt;
  if (!format->is_object()) {
    return std::string("'response_format' must be an object, got ") + format->type_name();
  }
  const json* type = member(*format, "type");
  if (type == nullptr || !type->is_string()) {
    return std::string("'response_format.type' must be a string");
  }
  const std::string& t = type->get_ref<const std::string&>();
  sampling::ConstraintSpec spec;
  spec.field = "response_format";
  if (t == "text") return std::nullopt;
  if (t == "json_object") {
    spec.kind = sampling::ConstraintSpec::Kind::kJsonObject;
  } else if (t == "json_schema") {
    const json* js = member(*format, "json_schema");
    if (js == nullptr || !js->is_object()) {
      return std::string("'response_format.json_schema' must be an object with a 'schema'");
    }
    const json* schema = member(*js, "schema");
    if (schema == nullptr) return std::string("'response_format.json_schema.schema' is required");
    if (!schema->is_object() && !schema->is_boolean()) {
      return std::string("'response_format.json_schema.schema' must be an object, got ") +
             schema->type_name();
    }
    spec.kind = sampling::ConstraintSpec::Kind::kJsonSchema;
    spec.source = dump(*schema);
    spec.field = "response_format.json_schema.schema";
  } else if (t == "structural_tag") {
    spec.kind = sampling::ConstraintSpec::Kind::kStructuralTag;
    spec.source = dump(*format);
  } else {
    return "'response_format.type' " + dump(*type) +
           " is not supported: text, json_object, json_schema or structural_tag";
  }
  asked.push_back({"response_format", std::move(spec)});
  return std::nullopt;
}

// vLLM's guided_* and llama.cpp's grammar / json_schema.
Problem read_guided(const json& body, std::vector<Asked>& asked) {
  using Kind = sampling::ConstraintSpec::Kind;
  for (const char* key : {"guided_json", "json_schema"}) {
    const json* value = member(body, key);
    if (value == nullptr) continue;
    sampling::ConstraintSpec spec{Kind::kJsonSchema, {}, {}, key};
    if (value->is_string()) {  // vLLM takes the schema as a JSON string too
      spec.source = value->get<std::string>();
    } else if (value->is_object() || value->is_boolean()) {
      spec.source = dump(*value);
    } else {
      return in_quotes(key) + " must be a JSON schema (an object or its JSON text), got " +
             value->type_name();
    }
    asked.push_back({key, std::move(spec)});
  }
  for (const auto& [key, kind] : {std::pair<const char*, Kind>{"guided_regex", Kind::kRegex},
                                  {"guided_grammar", Kind::kGrammar},
                                  {"grammar", Kind::kGrammar}}) {
    const json* value = member(body, key);
    if (value == nullptr) continue;
    if (!value->is_string()) {
      return in_quotes(key) + " must be a string, got " + value->type_name();
    }
    if (value->get_ref<const std::string&>().empty()) {
      if (std::string_view(key) == "grammar") continue;  // llama.cpp sends "" for none
      return in_quotes(key) + " is empty";
    }
    asked.push_back({key, {kind, value->get<std::string>(), {}, key}});
  }
  if (const json* choice = member(body, "guided_choice")) {
    if (!choice->is_array()) {
      return std::string("'guided_choice' must be an array of strings, got ") + choice->type_name();
    }
    sampling::ConstraintSpec spec{Kind::kChoice, {}, {}, "guided_choice"};
    for (size_t i = 0; i < choice->size(); ++i) {
      const json& item = (*choice)[i];
      if (!item.is_string()) {
        return "'guided_choice[" + std::to_string(i) + "]' must be a string, got " +
               item.type_name();
      }
      spec.choices.push_back(item.get<std::string>());
    }
    asked.push_back({"guided_choice", std::move(spec)});
  }
  if (const json* backend = member(body, "guided_decoding_backend")) {
    if (!backend->is_string()) return std::string("'guided_decoding_backend' must be a string");
    const std::string& b = backend->get_ref<const std::string&>();
    if (!b.empty() && b != "xgrammar" && b != "auto") {
      return "'guided_decoding_backend' '" + b + "' is not supported: only xgrammar (or auto)";
    }
  }
  return std::nullopt;
}

struct Tool {
  std::string name;
  json definition;  // {"type": "function", "function": {...}}, in that order
  json parameters;  // the arguments' schema
};

Problem read_tools(const json& tools, std::vector<Tool>& out) {
  if (!tools.is_array()) return std::string("'tools' must be an array, got ") + tools.type_name();
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string name = "tools[" + std::to_string(i) + "]";
    const json& tool = tools[i];
    if (!tool.is_object()) return in_quotes(name) + " must be an object";
    const json* type = member(tool, "type");
    if (type == nullptr || *type != "function") {
      return in_quotes(name + ".type") + " must be \"function\"";
    }
    const json* function = member(tool, "function");
    if (function == nullptr || !function->is_object()) {
      return in_quotes(name + ".function") + " must be an object";
    }
    const json* fname = member(*function, "name");
    if (fname == nullptr || !fname->is_string() || fname->get_ref<const std::string&>().empty()) {
      return in_quotes(name + ".function.name") + " must be a non-empty string";
    }
    Tool t;
    t.name = fname->get<std::string>();
    for (const Tool& other : out) {
      if (other.name == t.name) return "'tools': function '" + t.name + "' is defined twice";
    }
    t.parameters = json{{"type", "object"}};
    if (const json* parameters = member(*function, "parameters")) {
      if (!parameters->is_object()) {
        return in_quotes(name + ".function.parameters") + " must be a JSON schema object";
      }
      if (!parameters->empty()) t.parameters = *parameters;
    }
    json rendered = {{"name", t.name}};
    if (const json* description = member(*function, "description")) {
      rendered["description"] = *description;
    }
    rendered["parameters"] = t.parameters;
    t.definition = {{"type", "function"}, {"function", rendered}};
    out.push_back(std::move(t));
  }
  return std::nullopt;
}

// The tag one call of `tool` matches: <tool_call>\n{"name": "...", "arguments": ARGS}\n</tool_call>
json call_tag(const Tool& tool) {
  return {{"type", "tag"},
          {"begin",
           std::string(kCallBegin) + "\n{\"name\": " + dump(json(tool.name)) + ", \"arguments\": "},
          {"content", {{"type", "json_schema"}, {"json_schema", tool.parameters}}},
          {"end", "}\n" + std::string(kCallEnd)}};
}

std::string tools_system_text(const std::vector<Tool>& tools) {
  std::string text =
      "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
  for (const Tool& t : tools) text.append("\n").append(dump(t.definition));
  text.append(
      "\n</tools>\n\nFor each function call, return a json object with function name and "
      "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
      "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
  return text;
}

Problem read_tool_choice(const json& body, const std::vector<Tool>& tools, bool has_tools,
                         std::string& mode, std::string& named) {
  mode = has_tools ? "auto" : "none";
  const json* choice = member(body, "tool_choice");
  if (choice == nullptr) return std::nullopt;
  if (choice->is_string()) {
    mode = choice->get<std::string>();
    if (mode != "none" && mode != "auto" && mode != "required") {
      return "'tool_choice' must be none, auto, required or a named function, got '" + mode + "'";
    }
  } else if (choice->is_object()) {
    const json* function = member(*choice, "function");
    const json* fname =
        function != nullptr && function->is_object() ? member(*function, "name") : nullptr;
    if (fname == nullptr || !fname->is_string()) {
      return std::string(
          "'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": "
          "...}}");
    }
    mode = "named";
    named = fname->get<std::string>();
    bool found = false;
    for (const Tool& t : tools) found = found || t.name == named;
    if (!found) return "'tool_choice' names function '" + named + "', which is not in 'tools'";
  } else {
    return std::string("'tool_choice' must be a string or an object, got ") + choice->type_name();
  }
  if (mode != "none" && !has_tools) {
    return "'tool_choice' " + (mode == "named" ? "naming a function" : "'" + mode + "'") +
           " needs 'tools'";
  }
  return std::nullopt;
}

// Adds the tools to the system turn (a new one first when there is none).
void add_tools_to_messages(const std::vector<Tool>& tools, std::vector<model::ChatMessage>& m) {
  const std::string text = tools_system_text(tools);
  if (!m.empty() && (m.front().role == "system" || m.front().role == "developer")) {
    m.front().content.append("\n\n").append(text);
  } else {
    m.insert(m.begin(), model::ChatMessage{"system", text});
  }
}

}  // namespace

std::optional<std::string> read_structured_output(const nlohmann::ordered_json& body, bool chat,
                                                  RequestFields& f, bool& tool_calls) {
  tool_calls = false;
  std::vector<Asked> asked;
  if (Problem p = read_response_format(body, asked)) return p;
  if (Problem p = read_guided(body, asked)) return p;
  if (asked.size() > 1) {
    return "give one constraint, not both " + in_quotes(asked[0].field) + " and " +
           in_quotes(asked[1].field);
  }
  if (!asked.empty()) f.constraint = std::move(asked.front().spec);

  const json* tools_json = member(body, "tools");
  const bool has_tools = tools_json != nullptr && !(tools_json->is_array() && tools_json->empty());
  std::vector<Tool> tools;
  if (has_tools) {
    if (!chat) return std::string("'tools' is only supported on /v1/chat/completions");
    if (Problem p = read_tools(*tools_json, tools)) return p;
  }
  std::string mode, named;
  if (Problem p = read_tool_choice(body, tools, has_tools, mode, named)) return p;
  bool parallel = true;
  if (const json* value = member(body, "parallel_tool_calls")) {
    if (!value->is_boolean()) return std::string("'parallel_tool_calls' must be a boolean");
    parallel = value->get<bool>();
  }
  if (mode == "none") return std::nullopt;
  if (f.constraint) {
    return in_quotes(asked.front().field) +
           " cannot be combined with 'tools' (unless 'tool_choice' is \"none\")";
  }
  json format;
  if (mode == "auto") {
    json tags = json::array();
    for (const Tool& t : tools) tags.push_back(call_tag(t));
    format = {{"type", "triggered_tags"},
              {"triggers", json::array({std::string(kCallBegin)})},
              {"tags", tags},
              {"stop_after_first", !parallel}};
  } else if (mode == "required") {
    json elements = json::array();
    for (const Tool& t : tools) elements.push_back(call_tag(t));
    format = elements.size() == 1 ? elements[0] : json{{"type", "or"}, {"elements", elements}};
  } else {
    for (const Tool& t : tools) {
      if (t.name == named) format = call_tag(t);
    }
  }
  sampling::ConstraintSpec spec;
  spec.kind = sampling::ConstraintSpec::Kind::kStructuralTag;
  spec.source = dump(json{{"type", "structural_tag"}, {"format", format}});
  spec.field = "tools";
  f.constraint = std::move(spec);
  if (f.messages) add_tools_to_messages(tools, *f.messages);
  tool_calls = true;
  return std::nullopt;
}

bool is_tool_message(const nlohmann::json& message) {
  const nlohmann::json* role = member(message, "role");
  if (role != nullptr && *role == "tool") return true;
  return member(message, "tool_calls") != nullptr;
}

std::optional<std::string> read_tool_message(const std::string& name, const nlohmann::json& message,
                                             model::ChatMessage& out) {
  const nlohmann::json* role = member(message, "role");
  const nlohmann::json* content = member(message, "content");
  std::string text;
  if (content != nullptr) {
    if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      for (const nlohmann::json& part : *content) {
        const nlohmann::json* t = part.is_object() ? member(part, "text") : nullptr;
        if (t == nullptr || !t->is_string()) {
          return in_quotes(name + ".content") + " parts must be text parts";
        }
        text += t->get_ref<const std::string&>();
      }
    } else {
      return in_quotes(name + ".content") + " must be a string or an array of text parts";
    }
  }
  if (role != nullptr && *role == "tool") {
    out = {"user", std::string("<tool_response>\n") + text + "\n</tool_response>"};
    return std::nullopt;
  }
  if (role == nullptr || *role != "assistant") {
    return in_quotes(name + ".tool_calls") + " is only allowed on an assistant message";
  }
  const nlohmann::json& calls = message["tool_calls"];
  if (!calls.is_array()) return in_quotes(name + ".tool_calls") + " must be an array";
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string call_name = name + ".tool_calls[" + std::to_string(i) + "]";
    const nlohmann::json* function = calls[i].is_object() ? member(calls[i], "function") : nullptr;
    const nlohmann::json* fname =
        function != nullptr && function->is_object() ? member(*function, "name") : nullptr;
    if (fname == nullptr || !fname->is_string()) {
      return in_quotes(call_name + ".function.name") + " must be a string";
    }
    json arguments = json::object();  // ordered: the client's argument order
    if (const nlohmann::json* args = member(*function, "arguments")) {
      if (!args->is_string()) {
        return in_quotes(call_name + ".function.arguments") + " must be a JSON string";
      }
      arguments = json::parse(args->get<std::string>(), nullptr, false);
      if (arguments.is_discarded()) {
        return in_quotes(call_name + ".function.arguments") + " is not valid JSON";
      }
    }
    if (!text.empty()) text += "\n";
    text.append(kCallBegin)
        .append("\n")
        .append(dump(json{{"name", fname->get<std::string>()}, {"arguments", arguments}}))
        .append("\n")
        .append(kCallEnd);
  }
  out = {"assistant", std::move(text)};
  return std::nullopt;
}

ToolCallParser::Delta ToolCallParser::push(std::string_view text) {
  pending_.append(text);
  return drain(false);
}

ToolCallParser::Delta ToolCallParser::flush() {
  return drain(true);
}

ToolCallParser::Delta ToolCallParser::drain(bool at_end) {
  Delta out;
  while (!pending_.empty()) {
    // The newline the template puts after a call is not content, even when it comes later.
    if (after_call_) {
      if (pending_.front() == '\n') pending_.erase(0, 1);
      after_call_ = false;
      continue;
    }
    const size_t begin = pending_.find(kCallBegin);
    if (begin == std::string::npos) {
      // Hold back a tail that may still become "<tool_call>".
      size_t keep = 0;
      if (!at_end) {
        for (size_t n = std::min(pending_.size(), kCallBegin.size() - 1); n > 0; --n) {
          if (kCallBegin.substr(0, n) == std::string_view(pending_).substr(pending_.size() - n)) {
            keep = n;
            break;
          }
        }
      }
      out.content.append(pending_, 0, pending_.size() - keep);
      pending_.erase(0, pending_.size() - keep);
      break;
    }
    out.content.append(pending_, 0, begin);
    pending_.erase(0, begin);
    const size_t end = pending_.find(kCallEnd);
    if (end == std::string::npos) {
      if (at_end) {
        out.content += pending_;
        pending_.clear();
      }
      break;
    }
    const std::string body = pending_.substr(kCallBegin.size(), end - kCallBegin.size());
    const std::string block = pending_.substr(0, end + kCallEnd.size());
    pending_.erase(0, end + kCallEnd.size());
    const json call = json::parse(body, nullptr, false);
    const json* name = call.is_object() ? member(call, "name") : nullptr;
    const json* arguments = call.is_object() ? member(call, "arguments") : nullptr;
    if (name != nullptr && name->is_string() && arguments != nullptr && arguments->is_object()) {
      out.calls.push_back({call_id(), name->get<std::string>(), dump(*arguments)});
      after_call_ = true;
    } else {
      out.content += block;
    }
  }
  return out;
}

ToolCallParser::Delta parse_tool_calls(std::string_view text) {
  ToolCallParser parser;
  ToolCallParser::Delta out = parser.push(text);
  ToolCallParser::Delta tail = parser.flush();
  out.content += tail.content;
  for (ToolCall& c : tail.calls) out.calls.push_back(std::move(c));
  return out;
}

}  // namespace lightserve::frontends::openai
