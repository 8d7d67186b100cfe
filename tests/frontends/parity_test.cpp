// Both frontends translate a request the same way: the same fields sent as OpenAI JSON and as a
// lightserve.v1.GenerateRequest give the same serving::GenerateInput, and the same bad value gets
// the same message (frontends/common/request_translation.h).
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "frontends/grpc/proto_conversion.h"
#include "frontends/http/openai_api.h"

namespace lightserve::frontends {
namespace {

using json = nlohmann::json;
namespace v1 = ::lightserve::v1;

const TranslationContext kContext{"tiny-model", 1000};

// One request, built both ways from the same edits.
struct Both {
  json body = {{"prompt", "Hello"}};
  v1::GenerateRequest proto;
  Both() { proto.set_text("Hello"); }
};

using Edit = std::function<void(Both&)>;

Result<serving::GenerateInput> over_http(const Both& b) {
  auto parsed =
      openai::parse_generate_request(b.body.dump(), openai::Endpoint::kCompletions, kContext);
  if (!parsed) return parsed.error();
  return parsed.value().input;
}

Result<serving::GenerateInput> over_grpc(const Both& b) {
  return proto::to_generate_input(b.proto, kContext);
}

void expect_same(const serving::GenerateInput& a, const serving::GenerateInput& b,
                 const std::string& name) {
  SCOPED_TRACE(name);
  EXPECT_EQ(a.prompt_text, b.prompt_text);
  EXPECT_EQ(a.prompt_ids, b.prompt_ids);
  EXPECT_EQ(a.max_tokens, b.max_tokens);
  EXPECT_FLOAT_EQ(a.sampling.temperature, b.sampling.temperature);
  EXPECT_FLOAT_EQ(a.sampling.top_p, b.sampling.top_p);
  EXPECT_FLOAT_EQ(a.sampling.min_p, b.sampling.min_p);
  EXPECT_EQ(a.sampling.top_k, b.sampling.top_k);
  EXPECT_FLOAT_EQ(a.sampling.presence_penalty, b.sampling.presence_penalty);
  EXPECT_FLOAT_EQ(a.sampling.frequency_penalty, b.sampling.frequency_penalty);
  EXPECT_FLOAT_EQ(a.sampling.repetition_penalty, b.sampling.repetition_penalty);
  EXPECT_EQ(a.sampling.seed, b.sampling.seed);
  EXPECT_EQ(a.stop, b.stop);
  EXPECT_EQ(a.stop_token_ids, b.stop_token_ids);
  EXPECT_EQ(a.ignore_eos, b.ignore_eos);
  EXPECT_EQ(a.logprobs, b.logprobs);
  EXPECT_EQ(a.priority, b.priority);
  EXPECT_EQ(a.lighttransfer, b.lighttransfer);
  EXPECT_EQ(a.sampling.logit_bias, b.sampling.logit_bias);
  EXPECT_EQ(a.sampling.min_tokens, b.sampling.min_tokens);
  EXPECT_EQ(a.add_generation_prompt, b.add_generation_prompt);
  EXPECT_EQ(a.n, b.n);
  EXPECT_EQ(a.echo, b.echo);
  EXPECT_EQ(a.continue_final_message, b.continue_final_message);
  EXPECT_EQ(a.chat_template_kwargs, b.chat_template_kwargs);
}

TEST(FrontendParity, SameFieldsGiveTheSameInput) {
  const std::vector<std::pair<std::string, Edit>> cases = {
      {"defaults", [](Both&) {}},
      {"token ids",
       [](Both& b) {
         b.body["prompt"] = {1, 2, 999};
         b.proto.mutable_token_ids()->add_ids(1);
         b.proto.mutable_token_ids()->add_ids(2);
         b.proto.mutable_token_ids()->add_ids(999);
       }},
      {"every sampling field",
       [](Both& b) {
         b.body.update({{"max_tokens", 12},
                        {"temperature", 0.5},
                        {"top_p", 0.75},
                        {"min_p", 0.125},
                        {"top_k", 40},
                        {"presence_penalty", 0.5},
                        {"frequency_penalty", -0.25},
                        {"repetition_penalty", 1.25}});
         b.proto.set_max_tokens(12);
         b.proto.set_temperature(0.5f);
         b.proto.set_top_p(0.75f);
         b.proto.set_min_p(0.125f);
         b.proto.set_top_k(40);
         b.proto.set_presence_penalty(0.5f);
         b.proto.set_frequency_penalty(-0.25f);
         b.proto.set_repetition_penalty(1.25f);
       }},
      {"logit_bias and min_tokens",
       [](Both& b) {
         b.body.update({{"logit_bias", {{"9", -100}, {"4", 1.5}}}, {"min_tokens", 3}});
         (*b.proto.mutable_logit_bias())[9] = -100;
         (*b.proto.mutable_logit_bias())[4] = 1.5f;
         b.proto.set_min_tokens(3);
       }},
      {"n and echo",
       [](Both& b) {
         b.body.update({{"n", 4}, {"echo", true}});
         b.proto.set_n(4);
         b.proto.set_echo(true);
       }},
      {"top_k -1 is off on both",
       [](Both& b) {
         b.body["top_k"] = -1;
         b.proto.set_top_k(-1);
       }},
      {"stops, eos, logprobs, priority, mode",
       [](Both& b) {
         b.body.update({{"stop", {"a", "bc"}},
                        {"stop_token_ids", {5, 6}},
                        {"ignore_eos", true},
                        {"logprobs", 4},
                        {"priority", -9},
                        {"model", "tiny-model"},
                        {"lighttransfer", {{"mode", "streaming"}}}});
         b.proto.add_stop("a");
         b.proto.add_stop("bc");
         b.proto.add_stop_token_ids(5);
         b.proto.add_stop_token_ids(6);
         b.proto.set_ignore_eos(true);
         b.proto.set_logprobs(4);
         b.proto.set_priority(-9);
         b.proto.set_model("tiny-model");
         b.proto.mutable_lighttransfer()->set_mode(v1::LIGHTTRANSFER_MODE_STREAMING);
       }},
  };
  for (const auto& [name, edit] : cases) {
    Both b;
    // A fixed seed on both: otherwise each draws a fresh one and only the seed would differ.
    b.body["seed"] = 1234;
    b.proto.set_seed(1234);
    edit(b);
    Result<serving::GenerateInput> http = over_http(b), grpc = over_grpc(b);
    ASSERT_TRUE(http.ok()) << name << ": " << http.error().message;
    ASSERT_TRUE(grpc.ok()) << name << ": " << grpc.error().message;
    expect_same(http.value(), grpc.value(), name);
  }
}

TEST(FrontendParity, ChatMessagesGiveTheSameInput) {
  const std::string body =
      R"({"messages": [{"role": "developer", "content": "Be brief."},
                       {"role": "user", "content": "Hi"}], "seed": 5,
          "chat_template_kwargs": {"date_string": "1 Jan 2025", "a": "b"}})";
  auto http = openai::parse_generate_request(body, openai::Endpoint::kChatCompletions, kContext);
  ASSERT_TRUE(http.ok()) << http.error().message;
  v1::GenerateRequest r;
  auto* system = r.mutable_chat()->add_messages();
  system->set_role("developer");
  system->set_content("Be brief.");
  auto* user = r.mutable_chat()->add_messages();
  user->set_role("user");
  user->set_content("Hi");
  r.set_seed(5);
  (*r.mutable_chat_template_kwargs())["date_string"] = "1 Jan 2025";
  (*r.mutable_chat_template_kwargs())["a"] = "b";
  auto grpc = proto::to_generate_input(r, kContext);
  ASSERT_TRUE(grpc.ok()) << grpc.error().message;
  ASSERT_TRUE(http.value().input.messages && grpc.value().messages);
  ASSERT_EQ(http.value().input.messages->size(), grpc.value().messages->size());
  for (size_t i = 0; i < grpc.value().messages->size(); ++i) {
    EXPECT_EQ(http.value().input.messages->at(i).role, grpc.value().messages->at(i).role);
    EXPECT_EQ(http.value().input.messages->at(i).content, grpc.value().messages->at(i).content);
  }
  expect_same(http.value().input, grpc.value(), "chat");
}

TEST(FrontendParity, SameBadValueGetsTheSameMessage) {
  const std::vector<std::pair<std::string, Edit>> cases = {
      {"n 40",
       [](Both& b) {
         b.body["n"] = 40;
         b.proto.set_n(40);
       }},
      {"unknown model",
       [](Both& b) {
         b.body["model"] = "gpt-4";
         b.proto.set_model("gpt-4");
       }},
      {"max_tokens 0",
       [](Both& b) {
         b.body["max_tokens"] = 0;
         b.proto.set_max_tokens(0);
       }},
      {"temperature 3",
       [](Both& b) {
         b.body["temperature"] = 3;
         b.proto.set_temperature(3);
       }},
      {"top_p 0",
       [](Both& b) {
         b.body["top_p"] = 0;
         b.proto.set_top_p(0);
       }},
      {"min_p 1.5",
       [](Both& b) {
         b.body["min_p"] = 1.5;
         b.proto.set_min_p(1.5f);
       }},
      {"top_k -3",
       [](Both& b) {
         b.body["top_k"] = -3;
         b.proto.set_top_k(-3);
       }},
      {"presence_penalty 2.5",
       [](Both& b) {
         b.body["presence_penalty"] = 2.5;
         b.proto.set_presence_penalty(2.5f);
       }},
      {"repetition_penalty 0",
       [](Both& b) {
         b.body["repetition_penalty"] = 0;
         b.proto.set_repetition_penalty(0);
       }},
      {"logprobs 21",
       [](Both& b) {
         b.body["logprobs"] = 21;
         b.proto.set_logprobs(21);
       }},
      {"stop_token_ids out of the vocabulary",
       [](Both& b) {
         b.body["stop_token_ids"] = {3, 1000};
         b.proto.add_stop_token_ids(3);
         b.proto.add_stop_token_ids(1000);
       }},
      {"empty stop string",
       [](Both& b) {
         b.body["stop"] = {"x", ""};
         b.proto.add_stop("x");
         b.proto.add_stop("");
       }},
      {"five stop strings",
       [](Both& b) {
         b.body["stop"] = {"a", "b", "c", "d", "e"};
         for (const char* s : {"a", "b", "c", "d", "e"}) b.proto.add_stop(s);
       }},
      {"logit_bias out of range",
       [](Both& b) {
         b.body["logit_bias"] = {{"4", 150}};
         (*b.proto.mutable_logit_bias())[4] = 150;
       }},
      {"logit_bias on a token outside the vocabulary",
       [](Both& b) {
         b.body["logit_bias"] = {{"1000", 1}};
         (*b.proto.mutable_logit_bias())[1000] = 1;
       }},
      {"min_tokens over max_tokens",
       [](Both& b) {
         b.body.update({{"min_tokens", 8}, {"max_tokens", 2}});
         b.proto.set_min_tokens(8);
         b.proto.set_max_tokens(2);
       }},
      {"another model",
       [](Both& b) {
         b.body["model"] = "gpt-4";
         b.proto.set_model("gpt-4");
       }},
  };
  for (const auto& [name, edit] : cases) {
    Both b;
    edit(b);
    Result<serving::GenerateInput> http = over_http(b), grpc = over_grpc(b);
    ASSERT_FALSE(http.ok()) << name;
    ASSERT_FALSE(grpc.ok()) << name;
    EXPECT_EQ(http.error().message, grpc.error().message) << name;
  }
}

}  // namespace
}  // namespace lightserve::frontends
