// server/openai_api: OpenAI request JSON → GenerateInput (defaults, every field, errors that name
// the field) and engine events → completion / chat.completion objects and SSE chunks. No model,
// no daemon: the translation is pure.
#include "frontends/http/openai_api.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using lightserve::frontends::openai::ApiContext;
using lightserve::frontends::openai::Endpoint;
using lightserve::frontends::openai::parse_detokenize_request;
using lightserve::frontends::openai::parse_generate_request;
using lightserve::frontends::openai::parse_tokenize_request;
using lightserve::frontends::openai::ParsedRequest;
using lightserve::frontends::openai::ResponseBuilder;
using lightserve::scheduler::FinishReason;
using lightserve::scheduler::RequestEvent;
using json = nlohmann::json;

const ApiContext kContext{"tiny-model", 1000};

ParsedRequest parse_ok(const std::string& body, Endpoint endpoint = Endpoint::kCompletions) {
  auto r = parse_generate_request(body, endpoint, kContext);
  EXPECT_TRUE(r.ok()) << body << " → " << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.value() : ParsedRequest{};
}

std::string parse_error(const std::string& body, Endpoint endpoint = Endpoint::kCompletions) {
  auto r = parse_generate_request(body, endpoint, kContext);
  EXPECT_FALSE(r.ok()) << body << " was accepted";
  return r.ok() ? "" : r.error().message;
}

TEST(OpenAiParse, CompletionDefaultsAreOpenAis) {
  const ParsedRequest p = parse_ok(R"({"prompt": "Hello"})");
  ASSERT_TRUE(p.input.prompt_text.has_value());
  EXPECT_EQ(*p.input.prompt_text, "Hello");
  EXPECT_FALSE(p.input.prompt_ids.has_value());
  EXPECT_FALSE(p.input.max_tokens.has_value());
  EXPECT_FLOAT_EQ(p.input.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(p.input.sampling.top_p, 1.0f);
  EXPECT_EQ(p.input.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(p.input.sampling.min_p, 0.0f);
  EXPECT_EQ(p.input.logprobs, -1);
  EXPECT_FALSE(p.stream);
  EXPECT_FALSE(p.include_usage);
  EXPECT_EQ(p.input.lighttransfer, lightserve::serving::LightTransferOverride::kServerDefault);
}

TEST(OpenAiParse, EveryCompletionField) {
  const ParsedRequest p = parse_ok(R"({
    "model": "tiny-model", "prompt": [1, 2, 999], "max_tokens": 7, "temperature": 0,
    "top_p": 0.5, "top_k": 3, "min_p": 0.1, "seed": 42, "stop": ["a", "b"], "n": 1,
    "logprobs": 2, "stream": true, "stream_options": {"include_usage": true},
    "ignore_eos": true, "stop_token_ids": [5], "priority": -3,
    "lighttransfer": {"mode": "full"}, "user": "u", "some_future_field": {"x": 1},
    "presence_penalty": 0.5, "frequency_penalty": -0.25, "repetition_penalty": 1.1})");
  EXPECT_EQ(*p.input.prompt_ids, (std::vector<int32_t>{1, 2, 999}));
  EXPECT_EQ(*p.input.max_tokens, 7);
  EXPECT_FLOAT_EQ(p.input.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(p.input.sampling.top_p, 0.5f);
  EXPECT_EQ(p.input.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(p.input.sampling.min_p, 0.1f);
  EXPECT_EQ(p.input.sampling.seed, 42u);
  EXPECT_EQ(p.input.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(p.input.logprobs, 2);
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  EXPECT_TRUE(p.input.ignore_eos);
  EXPECT_EQ(p.input.stop_token_ids, (std::vector<int32_t>{5}));
  EXPECT_EQ(p.input.priority, -3);
  EXPECT_EQ(p.input.lighttransfer, lightserve::serving::LightTransferOverride::kFull);
  EXPECT_FLOAT_EQ(p.input.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(p.input.sampling.frequency_penalty, -0.25f);
  EXPECT_FLOAT_EQ(p.input.sampling.repetition_penalty, 1.1f);
}

TEST(OpenAiParse, ChatMessagesAndFields) {
  const ParsedRequest p = parse_ok(R"({
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                              {"type": "text", "text": "there"}]},
                 {"role": "assistant", "content": "Hello"},
                 {"role": "developer", "content": "x", "name": "ignored"}],
    "max_completion_tokens": 5, "max_tokens": 9, "logprobs": true, "top_logprobs": 3,
    "seed": -1, "stop": "END"})",
                                   Endpoint::kChatCompletions);
  ASSERT_TRUE(p.input.messages.has_value());
  ASSERT_EQ(p.input.messages->size(), 4u);
  EXPECT_EQ((*p.input.messages)[1].role, "user");
  EXPECT_EQ((*p.input.messages)[1].content, "Hi there");
  EXPECT_EQ((*p.input.messages)[3].role, "system");
  EXPECT_EQ(*p.input.max_tokens, 5);  // max_completion_tokens wins
  EXPECT_EQ(p.input.logprobs, 3);
  EXPECT_EQ(p.input.sampling.seed, ~0ull);
  EXPECT_EQ(p.input.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})",
                     Endpoint::kChatCompletions)
                .input.logprobs,
            0);
}

TEST(OpenAiParse, NullMeansUnset) {
  const ParsedRequest p = parse_ok(
      R"({"prompt": "x", "max_tokens": null, "temperature": null, "stop": null, "seed": null,
          "stream_options": null, "logprobs": null})");
  EXPECT_FALSE(p.input.max_tokens.has_value());
  EXPECT_FLOAT_EQ(p.input.sampling.temperature, 1.0f);
  EXPECT_TRUE(p.input.stop.empty());
}

TEST(OpenAiParse, ErrorsNameTheField) {
  struct Case {
    const char* body;
    const char* expected;
    Endpoint endpoint = Endpoint::kCompletions;
  };
  const Case cases[] = {
      {R"({"prompt": "x",)", "invalid JSON"},
      {R"([1, 2])", "must be a JSON object"},
      {R"({"max_tokens": 3})", "'prompt' is required"},
      {R"({"prompt": ""})", "'prompt' is empty"},
      {R"({"prompt": []})", "'prompt' is empty"},
      {R"({"prompt": 5})", "'prompt' must be a string or an array of token ids"},
      {R"({"prompt": ["a", "b"]})", "array of strings"},
      {R"({"prompt": [[1, 2], [3]]})", "array of token arrays"},
      {R"({"prompt": [1, 1000]})", "'prompt[1]' = 1000 is not a token id"},
      {R"({"prompt": [1, -1]})", "'prompt[1]' = -1 is not a token id"},
      {R"({"prompt": [1, 2.5]})", "'prompt[1]' must be an integer"},
      {R"({"prompt": "x", "model": "gpt-4"})", "The model 'gpt-4' does not exist"},
      {R"({"prompt": "x", "model": 3})", "'model' must be a string"},
      {R"({"prompt": "x", "max_tokens": 0})", "'max_tokens' must be ≥ 1, got 0"},
      {R"({"prompt": "x", "max_tokens": -5})", "'max_tokens' must be ≥ 1"},
      {R"({"prompt": "x", "max_tokens": 99999999999})", "'max_tokens' must be"},
      {R"({"prompt": "x", "max_tokens": "10"})", "'max_tokens' must be an integer, got string"},
      {R"({"prompt": "x", "temperature": -1})", "'temperature' must be in [0, 2], got -1"},
      {R"({"prompt": "x", "temperature": 5})", "'temperature' must be in [0, 2], got 5"},
      {R"({"prompt": "x", "temperature": "hot"})", "'temperature' must be a number"},
      {R"({"prompt": "x", "top_p": 0})", "'top_p' must be in (0, 1], got 0"},
      {R"({"prompt": "x", "top_p": 2})", "'top_p' must be in (0, 1]"},
      {R"({"prompt": "x", "top_k": -2})", "'top_k' must be ≥ -1"},
      {R"({"prompt": "x", "min_p": 1.5})", "'min_p' must be in [0, 1]"},
      {R"({"prompt": "x", "seed": 1.5})", "'seed' must be an integer"},
      {R"({"prompt": "x", "n": 33})", "'n' must be in [1, 32], got 33"},
      {R"({"prompt": "x", "n": "2"})", "'n' must be an integer, got string"},
      {R"({"prompt": "x", "best_of": 3})", "'best_of' = 3 with 'n' = 1 is not supported"},
      {R"({"prompt": "x", "echo": 1})", "'echo' must be a boolean"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "echo": true})",
       "'echo' is only supported with a prompt", Endpoint::kChatCompletions},
      {R"({"prompt": "x", "continue_final_message": true})",
       "'continue_final_message' needs chat messages"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "at most 4 strings, got 5"},
      {R"({"prompt": "x", "stop": [1]})", "'stop[0]' must be a string"},
      {R"({"prompt": "x", "stop": ""})", "'stop' is empty"},
      {R"({"prompt": "x", "stop": 7})", "'stop' must be a string or an array of strings"},
      {R"({"prompt": "x", "logprobs": 99})", "'logprobs' must be in [0, 20], got 99"},
      {R"({"prompt": "x", "logprobs": true})", "'logprobs' must be an integer"},
      {R"({"prompt": "x", "stream": "yes"})", "'stream' must be a boolean"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})",
       "'stream_options' is only allowed with 'stream': true"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": 1}})",
       "'stream_options.include_usage' must be a boolean"},
      {R"({"prompt": "x", "ignore_eos": 1})", "'ignore_eos' must be a boolean"},
      {R"({"prompt": "x", "stop_token_ids": [5000]})", "'stop_token_ids[0]' = 5000"},
      {R"({"prompt": "x", "priority": "high"})", "'priority' must be an integer"},
      {R"({"prompt": "x", "lighttransfer": {"mode": "bogus"}})",
       "'lighttransfer.mode' must be one of default, full, streaming, got 'bogus'"},
      {R"({"prompt": "x", "lighttransfer": {"mode": 1}})", "'lighttransfer.mode' must be a string"},
      {R"({"prompt": "x", "lighttransfer": {"window": 4}})",
       "'lighttransfer.window' is not a known"},
      {R"({"prompt": "x", "lighttransfer": "full"})", "'lighttransfer' must be an object"},
      {R"({"prompt": "x", "presence_penalty": 3})", "'presence_penalty' must be in [-2, 2], got 3"},
      {R"({"prompt": "x", "repetition_penalty": 0})",
       "'repetition_penalty' must be in (0, 10], got 0"},
      {R"({"prompt": "x", "frequency_penalty": "x"})", "'frequency_penalty' must be a number"},
      {R"({"prompt": "x", "logit_bias": {"five": 1}})",
       "'logit_bias' key 'five' is not a token id"},
      {R"({"prompt": "x", "logit_bias": {"5000": 1}})", "'logit_bias' names 5000, not a token id"},
      {R"({"prompt": "x", "logit_bias": {"5": 101}})", "'logit_bias[5]' must be in [-100, 100]"},
      {R"({"prompt": "x", "logit_bias": {"5": "up"}})", "'logit_bias[5]' must be a number"},
      {R"({"prompt": "x", "logit_bias": [5]})", "'logit_bias' must be an object"},
      {R"({"prompt": "x", "min_tokens": -1})", "'min_tokens' must be ≥ 0, got -1"},
      {R"({"prompt": "x", "min_tokens": 9, "max_tokens": 4})",
       "'min_tokens' = 9 is over 'max_tokens' = 4"},
      {R"({"prompt": "x", "guided_choice": "yes"})",
       "'guided_choice' must be an array of strings, got string"},
      {R"({"prompt": "x", "guided_json": 5})",
       "'guided_json' must be a JSON schema (an object or its JSON text), got number"},
      {R"({"prompt": "x", "grammar": 5})", "'grammar' must be a string, got number"},
      {R"({"prompt": "x", "guided_regex": ""})", "'guided_regex' is empty"},
      {R"({"prompt": "x", "guided_whitespace_pattern": " "})",
       "'guided_whitespace_pattern' is not supported by this server"},
      {R"({"prompt": "x", "guided_decoding_backend": "outlines"})",
       "'guided_decoding_backend' 'outlines' is not supported: only xgrammar (or auto)"},
      {R"({"prompt": "x", "guided_json": {}, "guided_regex": "a"})",
       "give one constraint, not both 'guided_json' and 'guided_regex'"},
      {R"({"prompt": "x", "response_format": {"type": "xml"}})",
       "'response_format.type' \"xml\" is not supported: text, json_object, json_schema or "
       "structural_tag"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {}}})",
       "'response_format.json_schema.schema' is required"},
      {R"({"prompt": "x", "tools": [{"type": "function", "function": {"name": "f"}}]})",
       "'tools' is only supported on /v1/chat/completions"},
      {R"({"prompt": "x", "skip_special_tokens": false})",
       "'skip_special_tokens' = false is not supported"},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": [1]})",
       "'chat_template_kwargs' must be an object", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}],
           "chat_template_kwargs": {"add_generation_prompt": 1}})",
       "'chat_template_kwargs.add_generation_prompt' must be a boolean",
       Endpoint::kChatCompletions},
      {R"({"prompt": "x", "suffix": "z"})", "'suffix' is not supported"},
      {R"({"messages": []})", "'messages' is empty", Endpoint::kChatCompletions},
      {R"({"prompt": "x"})", "'messages' is required", Endpoint::kChatCompletions},
      {R"({"messages": {"role": "user"}})", "'messages' must be an array",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "bogus", "content": "x"}]})",
       "'messages[0].role' must be one of system, user, assistant, got 'bogus'",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"content": "x"}]})", "'messages[0].role' is required",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user"}]})", "'messages[0].content' is required",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": 3}]})",
       "'messages[0].content' must be a string or an array of text parts",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "'messages[0].content[0].type' 'image_url' is not supported", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 3})",
       "'logprobs' must be a boolean", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3})",
       "'top_logprobs' needs 'logprobs': true", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})",
       "'top_logprobs' must be in [0, 20]", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})",
       "'tools[0].function' must be an object", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})",
       "'tool_choice' 'required' needs 'tools'", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes",
           "tools": [{"type": "function", "function": {"name": "f"}}]})",
       "'tool_choice' must be none, auto, required or a named function, got 'sometimes'",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}],
           "tools": [{"type": "function", "function": {"name": "f"}}],
           "tool_choice": {"type": "function", "function": {"name": "g"}}})",
       "'tool_choice' names function 'g', which is not in 'tools'", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"},
           "tools": [{"type": "function", "function": {"name": "f"}}]})",
       "'response_format' cannot be combined with 'tools'", Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]})",
       "'functions' (the deprecated function calling) is not supported: use 'tools'",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})",
       "'messages[0].tool_calls' is only allowed on an assistant message",
       Endpoint::kChatCompletions},
      {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f",
           "arguments": "{oops"}}]}]})",
       "'messages[0].tool_calls[0].function.arguments' is not valid JSON",
       Endpoint::kChatCompletions},
  };
  for (const Case& c : cases) {
    const std::string message = parse_error(c.body, c.endpoint);
    EXPECT_NE(message.find(c.expected), std::string::npos)
        << c.body << "\n  message: " << message << "\n  expected to contain: " << c.expected;
  }
}

TEST(OpenAiParse, InvalidUtf8IsRefusedByTheJsonParser) {
  const std::string body = "{\"prompt\": \"ab\xff\xfe\"}";
  EXPECT_NE(parse_error(body).find("UTF-8"), std::string::npos);
  const std::string surrogate = R"({"prompt": "\ud800x"})";
  EXPECT_NE(parse_error(surrogate).find("invalid JSON"), std::string::npos);
}

TEST(OpenAiParse, LogitBiasMinTokensAndTheNeutralExtras) {
  const ParsedRequest p = parse_ok(
      R"({"prompt": "x", "logit_bias": {"7": -100, "3": 2.5}, "min_tokens": 2, "max_tokens": 5,
          "guided_json": null, "grammar": "", "skip_special_tokens": true})");
  using Bias = std::vector<std::pair<int32_t, float>>;
  EXPECT_EQ(p.input.sampling.logit_bias, (Bias{{3, 2.5f}, {7, -100.0f}}));  // sorted by id
  EXPECT_EQ(p.input.sampling.min_tokens, 2);
  EXPECT_TRUE(p.input.add_generation_prompt);
  const auto chat = parse_generate_request(
      R"({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false})",
      Endpoint::kChatCompletions, kContext);
  ASSERT_TRUE(chat.ok()) << chat.error().message;
  EXPECT_FALSE(chat.value().input.add_generation_prompt);
  auto strs = parse_tokenize_request(R"({"prompt": "Hi", "return_token_strs": true})", kContext);
  ASSERT_TRUE(strs.ok()) << strs.error().message;
  EXPECT_TRUE(strs.value().return_token_strs);
}

// Issue 16: n, best_of, echo and the chat rendering fields reach the input.
TEST(OpenAiParse, SamplesEchoAndChatOptions) {
  const ParsedRequest p = parse_ok(R"({"prompt": "x", "n": 3, "best_of": 3, "echo": true})");
  EXPECT_EQ(p.input.n, 3);
  EXPECT_TRUE(p.input.echo);
  EXPECT_EQ(parse_ok(R"({"prompt": "x"})").input.n, 1);
  const auto chat = parse_generate_request(
      R"({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false,
          "continue_final_message": true,
          "chat_template_kwargs": {"date_string": "1 Jan 2025", "flag": true, "k": 2}})",
      Endpoint::kChatCompletions, kContext);
  ASSERT_TRUE(chat.ok()) << chat.error().message;
  EXPECT_TRUE(chat.value().input.continue_final_message);
  using Kwargs = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(chat.value().input.chat_template_kwargs,
            (Kwargs{{"date_string", "1 Jan 2025"}, {"flag", "true"}, {"k", "2"}}));
  // vLLM's kwargs may set add_generation_prompt (and continue_final_message) themselves.
  const auto merged = parse_generate_request(
      R"({"messages": [{"role": "user", "content": "x"}],
          "chat_template_kwargs": {"add_generation_prompt": false}})",
      Endpoint::kChatCompletions, kContext);
  ASSERT_TRUE(merged.ok()) << merged.error().message;
  EXPECT_FALSE(merged.value().input.add_generation_prompt);
  EXPECT_TRUE(merged.value().input.chat_template_kwargs.empty());
  auto tokenize = parse_tokenize_request(
      R"({"messages": [{"role": "assistant", "content": "x"}], "add_generation_prompt": false,
          "continue_final_message": true, "chat_template_kwargs": {"date_string": "d"}})",
      kContext);
  ASSERT_TRUE(tokenize.ok()) << tokenize.error().message;
  EXPECT_TRUE(tokenize.value().continue_final_message);
  EXPECT_EQ(tokenize.value().chat_template_kwargs.size(), 1u);
}

TEST(OpenAiParse, TokenizeAndDetokenizeRequests) {
  auto t = parse_tokenize_request(R"({"prompt": "Hi", "add_special_tokens": false})", kContext);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t.value().prompt, "Hi");
  EXPECT_FALSE(t.value().add_special_tokens);
  auto m = parse_tokenize_request(R"({"messages": [{"role": "user", "content": "Hi"}]})", kContext);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m.value().messages->size(), 1u);
  EXPECT_FALSE(parse_tokenize_request(R"({})", kContext).ok());
  EXPECT_FALSE(parse_tokenize_request(R"({"prompt": 3})", kContext).ok());

  auto d = parse_detokenize_request(R"({"tokens": [1, 2, 3]})", kContext);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value(), (std::vector<int32_t>{1, 2, 3}));
  auto bad = parse_detokenize_request(R"({"tokens": [1, 5000]})", kContext);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("'tokens[1]' = 5000 is not a token id"), std::string::npos);
}

// Events as the engine sends them.
RequestEvent token(int32_t id, const std::string& text, bool with_logprobs = false) {
  RequestEvent e;
  e.kind = RequestEvent::Kind::kToken;
  e.token_id = id;
  e.text = text;
  if (with_logprobs) {
    e.logprobs = lightserve::scheduler::TokenLogprobs{-0.5f, {{id, -0.5f}, {7, -1.5f}}};
  }
  return e;
}

RequestEvent finished(FinishReason reason, const std::string& text = "") {
  RequestEvent e;
  e.kind = RequestEvent::Kind::kFinished;
  e.finish_reason = reason;
  e.text = text;
  e.timings.num_prompt_tokens = 4;
  e.timings.num_generated_tokens = 3;
  return e;
}

std::string token_text(int32_t id) {
  std::string text = "<";  // appended: GCC 12 warns falsely (-Wrestrict) on "<" + std::string
  text += std::to_string(id);
  return text + ">";
}

TEST(OpenAiResponse, CompletionObject) {
  ResponseBuilder b(Endpoint::kCompletions, "tiny-model", token_text, false, 1700000000);
  b.add(token(1, "Hel"));
  b.add(token(2, "lo"));
  b.add(finished(FinishReason::kLength, "!"));
  ASSERT_TRUE(b.finished());
  const json r = json::parse(b.response());
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(r["model"], "tiny-model");
  EXPECT_EQ(r["created"], 1700000000);
  EXPECT_EQ(r["choices"][0]["text"], "Hello!");
  EXPECT_EQ(r["choices"][0]["index"], 0);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(r["usage"],
            json({{"prompt_tokens", 4}, {"completion_tokens", 3}, {"total_tokens", 7}}));
}

TEST(OpenAiResponse, ChatObjectWithLogprobs) {
  ResponseBuilder b(Endpoint::kChatCompletions, "tiny-model", token_text, true, 1);
  b.add(token(1, "Hi", true));
  b.add(finished(FinishReason::kStop));
  const json r = json::parse(b.response());
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(r["choices"][0]["message"], json({{"role", "assistant"}, {"content", "Hi"}}));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  const json& content = r["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0]["token"], "<1>");
  EXPECT_FLOAT_EQ(content[0]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(content[0]["bytes"], json({'<', '1', '>'}));
  ASSERT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "<7>");
}

TEST(OpenAiResponse, CompletionLogprobsHaveOffsets) {
  ResponseBuilder b(Endpoint::kCompletions, "m", token_text, true, 1);
  b.add(token(1, "ab", true));
  b.add(token(2, "c", true));
  b.add(finished(FinishReason::kStop));
  const json lp = json::parse(b.response())["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({"<1>", "<2>"}));
  EXPECT_EQ(lp["text_offset"], json({0, 2}));
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(lp["token_logprobs"].size(), 2u);
}

// The SSE events of a stream, as JSON (the final "[DONE]" kept as a string).
std::vector<json> sse_events(const std::string& text) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event in " << text;
    if (end == std::string::npos) break;
    const std::string line = text.substr(pos, end - pos);
    EXPECT_EQ(line.rfind("data: ", 0), 0u) << line;
    const std::string data = line.substr(6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
    pos = end + 2;
  }
  return out;
}

TEST(OpenAiStream, ChatChunksSendTheRoleFirstThenContentThenUsage) {
  ResponseBuilder b(Endpoint::kChatCompletions, "m", token_text, false, 1);
  std::string text;
  text += b.stream_event(token(1, "Hel"), true);
  text += b.stream_event(token(2, ""), true);  // held back: no chunk
  text += b.stream_event(token(3, "lo"), true);
  text += b.stream_event(finished(FinishReason::kStop), true);
  const std::vector<json> events = sse_events(text);
  ASSERT_EQ(events.size(), 6u) << text;
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(events[0]["usage"].is_null());
  EXPECT_EQ(events[1]["choices"][0]["delta"], json({{"content", "Hel"}}));
  EXPECT_EQ(events[2]["choices"][0]["delta"], json({{"content", "lo"}}));
  EXPECT_TRUE(events[2]["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(events[3]["choices"][0]["delta"], json::object());
  EXPECT_EQ(events[3]["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(events[4]["choices"].empty());
  EXPECT_EQ(events[4]["usage"]["total_tokens"], 7);
  EXPECT_EQ(events[5], "[DONE]");
  for (size_t i = 0; i + 1 < events.size(); ++i) EXPECT_EQ(events[i]["id"], events[0]["id"]);
}

TEST(OpenAiStream, CompletionChunksWithoutUsage) {
  ResponseBuilder b(Endpoint::kCompletions, "m", token_text, false, 1);
  std::string text = b.stream_event(token(1, "A"), false);
  text += b.stream_event(finished(FinishReason::kLength, "B"), false);
  const std::vector<json> events = sse_events(text);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["choices"][0]["text"], "A");
  EXPECT_FALSE(events[0].contains("usage"));
  EXPECT_EQ(events[1]["choices"][0]["text"], "B");
  EXPECT_EQ(events[1]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events[2], "[DONE]");
}

TEST(OpenAiStream, AnEngineErrorBecomesAnErrorEventThenDone) {
  ResponseBuilder b(Endpoint::kCompletions, "m", token_text, false, 1);
  RequestEvent e = finished(FinishReason::kError);
  e.error = lightserve::scheduler::EngineError{lightserve::scheduler::ErrorKind::kInternal, "boom"};
  const std::vector<json> events = sse_events(b.stream_event(e, false));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["error"]["message"], "boom");
  EXPECT_EQ(events[1], "[DONE]");
}

TEST(OpenAiResponse, InvalidUtf8FromTheModelIsReplacedNotThrown) {
  ResponseBuilder b(
      Endpoint::kChatCompletions, "m", [](int32_t) { return std::string("\xe2"); }, true, 1);
  b.add(token(1, "\xff", true));
  b.add(finished(FinishReason::kStop));
  const json r = json::parse(b.response());
  EXPECT_EQ(r["choices"][0]["message"]["content"], "\xEF\xBF\xBD");
  EXPECT_EQ(r["choices"][0]["logprobs"]["content"][0]["bytes"], json({0xe2}));
}

}  // namespace

// n = 2 with echo: one choice per index, each after the prompt text; usage counts the prompt
// once and sums the completions; the fingerprint in the response and every chunk.
TEST(OpenAiResponse, ChoicesEchoAndFingerprint) {
  const lightserve::frontends::openai::ResponseOptions options{2, "Say: ", "fp_0123456789abcdef"};
  ResponseBuilder b(Endpoint::kCompletions, "m", token_text, false, 1, options);
  b.add(token(1, "a"), 1);
  b.add(token(2, "b"), 0);
  b.add(finished(FinishReason::kLength), 1);
  EXPECT_FALSE(b.finished());
  b.add(finished(FinishReason::kStop, "!"), 0);
  ASSERT_TRUE(b.finished());
  const json r = json::parse(b.response());
  ASSERT_EQ(r["choices"].size(), 2u);
  EXPECT_EQ(r["choices"][0]["index"], 0);
  EXPECT_EQ(r["choices"][0]["text"], "Say: b!");
  EXPECT_EQ(r["choices"][1]["text"], "Say: a");
  EXPECT_EQ(r["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(r["usage"],
            json({{"prompt_tokens", 4}, {"completion_tokens", 6}, {"total_tokens", 10}}));
  EXPECT_EQ(r["system_fingerprint"], "fp_0123456789abcdef");

  ResponseBuilder s(Endpoint::kChatCompletions, "m", token_text, false, 1, {2, "", "fp_x"});
  std::string sse = s.stream_event(token(1, "x"), true, 1);
  sse += s.stream_event(finished(FinishReason::kStop), true, 1);
  EXPECT_EQ(sse.find("[DONE]"), std::string::npos);  // sample 0 is not finished
  sse += s.stream_event(finished(FinishReason::kStop, "y"), true, 0);
  std::vector<json> chunks;
  for (size_t at = 0; (at = sse.find("data: {", at)) != std::string::npos; at += 6) {
    chunks.push_back(json::parse(sse.substr(at + 6, sse.find("\n\n", at) - at - 6)));
  }
  ASSERT_EQ(chunks.size(), 6u);  // role 1, "x", finish 1, role 0, "y" + finish 0, usage
  std::vector<int> indexes, roles;
  for (const json& c : chunks) {
    EXPECT_EQ(c["system_fingerprint"], "fp_x");
    if (c["choices"].empty()) continue;
    indexes.push_back(c["choices"][0]["index"]);
    if (c["choices"][0]["delta"].contains("role")) roles.push_back(indexes.back());
  }
  EXPECT_EQ(indexes, (std::vector<int>{1, 1, 1, 0, 0}));
  EXPECT_EQ(roles, (std::vector<int>{1, 0}));
  EXPECT_EQ(chunks.back()["usage"]["completion_tokens"], 6);
  EXPECT_NE(sse.rfind("data: [DONE]\n\n"), std::string::npos);
}
