// Structured output and tool calling for the OpenAI routes (README "API fields"; docs/design.md §7
// "Constrained decoding").
//
// read_structured_output() reads the constraint fields — response_format (json_object,
// json_schema, structural_tag), vLLM's guided_json / guided_regex / guided_choice /
// guided_grammar, llama.cpp's grammar (GBNF) and json_schema — and tools / tool_choice, into a
// sampling::ConstraintSpec that serving::ServingCore::prepare() compiles (XGrammar).
//
// Tools follow the Hermes / Qwen2.5 convention, whatever the model's chat template (ChatML has no
// tool syntax): the definitions go into the system turn inside <tools></tools>, and the model
// answers a call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>. tool_choice "auto":
// free text or calls (a grammar with both branches: text until "<tool_call>", then the call's
// JSON); "required": exactly one call to any tool; a named function: exactly one call to it;
// "none": the tools are not shown to the model. Earlier turns' assistant tool_calls and "tool"
// messages are rendered in the same syntax (<tool_call> in the assistant turn, <tool_response>
// in a user turn).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frontends/common/request_translation.h"

namespace lightserve::frontends::openai {

// Reads the fields above into f.constraint (and f.messages with tools); `tool_calls` tells
// whether the response parses tool calls. nullopt when fine, else the 400 message naming the field.
// `body` is parsed keeping the order of object keys: a schema's properties are generated in the
// client's order.
std::optional<std::string> read_structured_output(const nlohmann::ordered_json& body, bool chat,
                                                  RequestFields& f, bool& tool_calls);

// A chat message with role "tool", or an assistant message with tool_calls: rendered into
// `out` (role and content) as the Hermes syntax. nullopt when fine, else the message.
bool is_tool_message(const nlohmann::json& message);
std::optional<std::string> read_tool_message(const std::string& name, const nlohmann::json& message,
                                             model::ChatMessage& out);

struct ToolCall {
  std::string id;  // "call_" + 24 hex digits
  std::string name;
  std::string arguments;  // the arguments object as a JSON string, as OpenAI sends it
};

// Splits model output into content and tool calls, as it streams. A <tool_call> block whose JSON
// does not parse as {"name": string, "arguments": object} stays content.
class ToolCallParser {
 public:
  struct Delta {
    std::string content;
    std::vector<ToolCall> calls;
  };
  // The content this text releases (a possible "<tool_call>" prefix is held back) and the calls
  // it completes.
  Delta push(std::string_view text);
  // At the end: what is held back (an unclosed call too) as content.
  Delta flush();

 private:
  Delta drain(bool at_end);
  std::string pending_;
  bool after_call_ = false;  // a call just ended: a newline next is dropped
};

// Every call in a whole output, and the content around them (empty when only calls).
ToolCallParser::Delta parse_tool_calls(std::string_view text);

}  // namespace lightserve::frontends::openai
