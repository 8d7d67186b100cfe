// frontends/http/tool_calls: the constraint fields and tools → RequestFields (the constraint spec,
// the tools in the system turn), tool messages in the Hermes syntax, and the parser that splits
// output into content and tool_calls, whole or streamed in any cut. No model, no daemon.
#include "frontends/http/tool_calls.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "frontends/http/openai_api.h"

namespace lightserve::frontends::openai {
namespace {

using json = nlohmann::json;
using Kind = sampling::ConstraintSpec::Kind;

const ApiContext kContext{"tiny-model", 1000};

ParsedRequest parse_chat(const std::string& body) {
  auto r = parse_generate_request(body, Endpoint::kChatCompletions, kContext);
  EXPECT_TRUE(r.ok()) << body << " → " << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.value() : ParsedRequest{};
}

TEST(StructuredOutput, EachFieldGivesItsConstraint) {
  struct Case {
    std::string fields;
    Kind kind;
    std::string source;
    std::string field;
  };
  const std::vector<Case> cases = {
      {R"("response_format": {"type": "json_object"})", Kind::kJsonObject, "", "response_format"},
      {R"("response_format": {"type": "json_schema", "json_schema": {"name": "n", "strict": true,
          "schema": {"type": "object"}}})",
       Kind::kJsonSchema, R"({"type":"object"})", "response_format.json_schema.schema"},
      {R"("guided_json": {"type": "integer"})", Kind::kJsonSchema, R"({"type":"integer"})",
       "guided_json"},
      {R"("guided_json": "{\"type\": \"integer\"}")", Kind::kJsonSchema, R"({"type": "integer"})",
       "guided_json"},
      {R"("json_schema": {"type": "string"})", Kind::kJsonSchema, R"({"type":"string"})",
       "json_schema"},
      {R"("guided_regex": "[0-9]+")", Kind::kRegex, "[0-9]+", "guided_regex"},
      {R"("guided_grammar": "root ::= \"a\"")", Kind::kGrammar, R"(root ::= "a")",
       "guided_grammar"},
      {R"("grammar": "root ::= \"a\"", "guided_decoding_backend": "xgrammar")", Kind::kGrammar,
       R"(root ::= "a")", "grammar"},
  };
  for (const Case& c : cases) {
    const ParsedRequest p =
        parse_chat(R"({"messages": [{"role": "user", "content": "x"}], )" + c.fields + "}");
    ASSERT_TRUE(p.input.constraint) << c.fields;
    EXPECT_EQ(p.input.constraint->kind, c.kind) << c.fields;
    EXPECT_EQ(p.input.constraint->source, c.source) << c.fields;
    EXPECT_EQ(p.input.constraint->field, c.field) << c.fields;
    EXPECT_FALSE(p.tool_calls);
  }
  const ParsedRequest choice = parse_chat(
      R"({"messages": [{"role": "user", "content": "x"}], "guided_choice": ["a", "b c"]})");
  ASSERT_TRUE(choice.input.constraint);
  EXPECT_EQ(choice.input.constraint->choices, (std::vector<std::string>{"a", "b c"}));
  const ParsedRequest text = parse_chat(
      R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}})");
  EXPECT_FALSE(text.input.constraint);
}

TEST(StructuredOutput, ToolsGoIntoTheSystemTurnWithATagConstraint) {
  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "get_weather",
      "description": "Weather", "parameters": {"type": "object", "properties":
      {"city": {"type": "string"}}, "required": ["city"]}}}])";
  const ParsedRequest p = parse_chat(
      R"({"messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": "x"}], )" +
      tools + "}");
  ASSERT_TRUE(p.tool_calls);
  ASSERT_TRUE(p.input.constraint);
  EXPECT_EQ(p.input.constraint->kind, Kind::kStructuralTag);
  EXPECT_EQ(p.input.constraint->field, "tools");
  const json tag = json::parse(p.input.constraint->source);
  EXPECT_EQ(tag["format"]["type"], "triggered_tags");  // auto: text or calls
  EXPECT_EQ(tag["format"]["triggers"], json::array({"<tool_call>"}));
  const std::string begin = tag["format"]["tags"][0]["begin"];
  EXPECT_EQ(begin, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ");
  const auto& messages = *p.input.messages;
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].content.rfind("Be brief.\n\n# Tools\n", 0), 0u) << messages[0].content;
  EXPECT_NE(messages[0].content.find("<tools>\n{\"type\":\"function\",\"function\":{\"name\":"
                                     "\"get_weather\",\"description\":\"Weather\""),
            std::string::npos)
      << messages[0].content;

  // required: one call of any tool (no free text); named: that tool; none: no tools, no constraint.
  const ParsedRequest required =
      parse_chat(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required", )" +
                 tools + "}");
  EXPECT_EQ(json::parse(required.input.constraint->source)["format"]["type"], "tag");
  EXPECT_EQ((*required.input.messages)[0].role, "system");  // a system turn was added
  const ParsedRequest none = parse_chat(
      R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "none", )" + tools + "}");
  EXPECT_FALSE(none.input.constraint);
  EXPECT_FALSE(none.tool_calls);
  EXPECT_EQ(none.input.messages->size(), 1u);
}

TEST(StructuredOutput, ToolTurnsAreRenderedInTheHermesSyntax) {
  const ParsedRequest p = parse_chat(R"({"messages": [
      {"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})");
  const auto& m = *p.input.messages;
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1].role, "assistant");
  EXPECT_EQ(m[1].content,
            "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n"
            "</tool_call>");
  EXPECT_EQ(m[2].role, "user");
  EXPECT_EQ(m[2].content, "<tool_response>\nsunny\n</tool_response>");
}

TEST(ToolCallParser, WholeOutput) {
  const auto d = parse_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}\n"
      "</tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>");
  ASSERT_EQ(d.calls.size(), 2u);
  EXPECT_EQ(d.calls[0].name, "f");
  EXPECT_EQ(d.calls[0].arguments, R"({"a":[1,2]})");
  EXPECT_EQ(d.calls[1].name, "g");
  EXPECT_EQ(d.calls[1].arguments, "{}");
  EXPECT_EQ(d.calls[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(d.calls[0].id.size(), 29u);
  EXPECT_NE(d.calls[0].id, d.calls[1].id);
  EXPECT_EQ(d.content, "Let me check.\n");

  // Not a call: bad JSON, no name, an unclosed block, a lone '<'.
  for (const std::string text :
       {"<tool_call>{oops}</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>",
        "a <tool_call>{\"name\": \"f\", \"arguments\": {}}", "1 < 2 <tool"}) {
    const auto r = parse_tool_calls(text);
    EXPECT_TRUE(r.calls.empty()) << text;
    EXPECT_EQ(r.content, text);
  }
}

TEST(ToolCallParser, AnyCutOfTheStreamGivesTheSameResult) {
  const std::string text =
      "Hi <b>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": \"</tool\"}}\n</tool_call>\n"
      "tail <tool_";
  const auto whole = parse_tool_calls(text);
  ASSERT_EQ(whole.calls.size(), 1u);
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    for (size_t step : {size_t{1}, size_t{3}, text.size()}) {
      ToolCallParser parser;
      std::string content;
      std::vector<ToolCall> calls;
      auto take = [&](ToolCallParser::Delta d) {
        content += d.content;
        for (auto& c : d.calls) calls.push_back(c);
      };
      take(parser.push(std::string_view(text).substr(0, cut)));
      for (size_t i = cut; i < text.size(); i += step) {
        take(parser.push(std::string_view(text).substr(i, step)));
      }
      take(parser.flush());
      EXPECT_EQ(content, whole.content) << cut << " " << step;
      ASSERT_EQ(calls.size(), 1u);
      EXPECT_EQ(calls[0].arguments, whole.calls[0].arguments);
    }
  }
  // Content is never held back beyond a possible "<tool_call>" prefix.
  ToolCallParser parser;
  EXPECT_EQ(parser.push("abc <to").content, "abc ");
  EXPECT_EQ(parser.push("day").content, "<today");
}

scheduler::RequestEvent token_event(const std::string& text) {
  scheduler::RequestEvent e;
  e.kind = scheduler::RequestEvent::Kind::kToken;
  e.text = text;
  return e;
}

scheduler::RequestEvent finish_event() {
  scheduler::RequestEvent e;
  e.kind = scheduler::RequestEvent::Kind::kFinished;
  e.finish_reason = scheduler::FinishReason::kStop;
  return e;
}

ResponseOptions with_tools(int32_t n = 1) {
  ResponseOptions options;
  options.n = n;
  options.tool_calls = true;
  return options;
}

ResponseBuilder chat_builder(int32_t n = 1) {
  return ResponseBuilder(
      Endpoint::kChatCompletions, "m", [](int32_t) { return ""; }, false, 0, with_tools(n));
}

// The "data: {...}" chunks of an SSE text.
std::vector<json> sse_chunks(const std::string& sse) {
  std::vector<json> chunks;
  for (size_t at = 0; (at = sse.find("data: {", at)) != std::string::npos;) {
    const size_t end = sse.find("\n\n", at);
    chunks.push_back(json::parse(sse.substr(at + 6, end - at - 6)));
    at = end;
  }
  return chunks;
}

TEST(ToolCallResponse, WholeAndStreamed) {
  const std::vector<std::string> pieces = {"<tool", "_call>\n{\"name\": \"f\", \"argu",
                                           "ments\": {\"q\": 1}}\n</tool_call>"};
  ResponseBuilder whole = chat_builder();
  for (const auto& p : pieces) whole.add(token_event(p));
  whole.add(finish_event());
  const json r = json::parse(whole.response());
  const json& choice = r["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  EXPECT_EQ(choice["message"]["tool_calls"][0]["type"], "function");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["arguments"], R"({"q":1})");

  ResponseBuilder stream = chat_builder();
  std::string sse;
  for (const auto& p : pieces) sse += stream.stream_event(token_event(p), false);
  sse += stream.stream_event(finish_event(), false);
  const std::vector<json> chunks = sse_chunks(sse);
  int calls = 0;
  for (const json& c : chunks) {
    const json& delta = c["choices"][0]["delta"];
    EXPECT_FALSE(delta.contains("content") && delta["content"] != "") << c.dump();
    if (delta.contains("tool_calls")) {
      ++calls;
      EXPECT_EQ(delta["tool_calls"][0]["index"], 0);
      EXPECT_EQ(delta["tool_calls"][0]["function"]["arguments"], R"({"q":1})");
    }
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(chunks.back()["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_NE(sse.find("data: [DONE]"), std::string::npos);
}

// n > 1: each choice has its own parser and call count; a call in one choice neither holds back
// nor renames another's content.
TEST(ToolCallResponse, EachChoiceParsesItsOwnCalls) {
  const std::vector<std::pair<int32_t, std::string>> events = {
      {0, "<tool"},
      {1, "Sunny <to"},
      {0, "_call>\n{\"name\": \"f\", \"argu"},
      {1, "day"},
      {0, "ments\": {\"q\": 1}}\n</tool_call>"},
      {1, " and warm."}};
  ResponseBuilder whole = chat_builder(2);
  for (const auto& [index, text] : events) whole.add(token_event(text), index);
  whole.add(finish_event(), 1);
  EXPECT_FALSE(whole.finished());
  whole.add(finish_event(), 0);
  ASSERT_TRUE(whole.finished());
  const json r = json::parse(whole.response());
  ASSERT_EQ(r["choices"].size(), 2u);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(r["choices"][0]["message"]["content"].is_null());
  EXPECT_EQ(r["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(r["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][1]["message"]["content"], "Sunny <today and warm.");
  EXPECT_FALSE(r["choices"][1]["message"].contains("tool_calls"));

  ResponseBuilder stream = chat_builder(2);
  std::string sse;
  for (const auto& [index, text] : events)
    sse += stream.stream_event(token_event(text), false, index);
  sse += stream.stream_event(finish_event(), false, 1);
  sse += stream.stream_event(finish_event(), false, 0);
  std::map<int32_t, std::string> content;
  std::map<int32_t, std::string> finish;
  std::map<int32_t, int> num_calls;
  for (const json& c : sse_chunks(sse)) {
    const json& choice = c["choices"][0];
    const int32_t index = choice["index"];
    if (choice["delta"].contains("content")) content[index] += choice["delta"]["content"];
    if (choice["delta"].contains("tool_calls")) {
      EXPECT_EQ(choice["delta"]["tool_calls"][0]["index"], num_calls[index]) << c.dump();
      ++num_calls[index];
    }
    if (!choice["finish_reason"].is_null()) finish[index] = choice["finish_reason"];
  }
  EXPECT_EQ(content[0], "");
  EXPECT_EQ(content[1], "Sunny <today and warm.");
  EXPECT_EQ(num_calls[0], 1);
  EXPECT_EQ(num_calls[1], 0);
  EXPECT_EQ(finish[0], "tool_calls");
  EXPECT_EQ(finish[1], "stop");
  EXPECT_NE(sse.find("data: [DONE]"), std::string::npos);
}

}  // namespace
}  // namespace lightserve::frontends::openai
