// Issue 16's API fields over gRPC, against the real daemon (a child process on ephemeral ports):
// n (sample i is the n = 1 request with seed + i; streamed messages name their sample),
// structured_output (alone, and with n > 1: every sample holds to the constraint), echo,
// continue_final_message and chat_template_kwargs, NOT_FOUND for an unknown model,
// system_fingerprint, and server reflection v1 and v1alpha resolving grpc.health.v1.Health. The
// python client test (grpc_reflection_client_test.py) drives reflection with grpcio's client.
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.pb.h"
#include "lightserve/v1/generation.grpc.pb.h"
#include "tests/support/cli_runner.h"
#include "tests/support/daemon_process.h"
#include "tests/support/grpc_daemon_suite.h"
#include "tests/support/grpc_raw.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = lightserve::v1;
namespace rv1 = grpc::reflection::v1;

const std::string kModel = LIGHTSERVE_TEST_MODEL;
const std::string kApiKey = "fields-key-16";
constexpr const char* kPrompt = "The weather today is";

void prepare(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  context.AddMetadata("authorization", "Bearer " + kApiKey);
}

v1::GenerateRequest sampled(int32_t n, uint64_t seed, int32_t max_tokens) {
  v1::GenerateRequest request;
  request.set_text(kPrompt);
  request.set_max_tokens(max_tokens);
  request.set_temperature(1.0f);
  request.set_seed(seed);
  request.set_ignore_eos(true);
  if (n != 1) request.set_n(n);
  return request;
}

// One request and its one reply on a reflection stream (`method`: the v1 or v1alpha path; the
// two protocols have the same bytes), through a callback reactor on a generic stub.
class ReflectOnce final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReflectOnce(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
              const rv1::ServerReflectionRequest& request)
      : stub_(channel) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Slice slice(request.SerializeAsString());
    request_ = grpc::ByteBuffer(&slice, 1);
    stub_.PrepareBidiStreamingCall(&context_, method, grpc::StubOptions(), this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  grpc::Status wait(rv1::ServerReflectionResponse* reply) {
    grpc::Status status = done_.get_future().get();
    reply->ParseFromString(bytes_);
    return status;
  }
  void OnWriteDone(bool /*ok*/) override { StartWritesDone(); }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    std::vector<grpc::Slice> slices;
    (void)response_.Dump(&slices);
    for (const auto& s : slices) bytes_.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  void OnDone(const grpc::Status& status) override { done_.set_value(status); }

 private:
  grpc::GenericStub stub_;
  grpc::ClientContext context_;
  grpc::ByteBuffer request_, response_;
  std::string bytes_;
  std::promise<grpc::Status> done_;
};

class GrpcApiFieldsTest : public lightserve::testing::GrpcDaemonSuite {
 protected:
  static void SetUpTestSuite() {
    start_daemon(kModel, {"--model", kModel, "--http-port", "-1", "--kv-budget", "64MiB",
                          "--context", "1024", "--threads", "2", "--api-key", kApiKey});
  }

  static grpc::Status generate(const v1::GenerateRequest& request, v1::GenerateResponse* out) {
    grpc::ClientContext context;
    prepare(context);
    return stub_->Generate(&context, request, out);
  }
  static grpc::Status stream(const v1::GenerateRequest& request,
                             std::vector<v1::GenerateStreamResponse>* out) {
    grpc::ClientContext context;
    prepare(context);
    auto reader = stub_->GenerateStream(&context, request);
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) out->push_back(message);
    return reader->Finish();
  }
  static std::string fingerprint() {
    grpc::ClientContext context;
    prepare(context);
    v1::GetServerInfoResponse info;
    EXPECT_TRUE(stub_->GetServerInfo(&context, {}, &info).ok());
    return info.system_fingerprint();
  }
};

// The four samples share one prefill (forks of sample 0) and still equal the single requests.
TEST_F(GrpcApiFieldsTest, NSamplesAreTheSeededSingleRequests) {
  v1::GenerateResponse response;
  ASSERT_TRUE(generate(sampled(4, 77, 6), &response).ok());
  ASSERT_EQ(response.choices_size(), 4);
  EXPECT_TRUE(response.text().empty());
  EXPECT_FALSE(response.has_finish());
  std::set<std::string> texts;
  for (int i = 0; i < 4; ++i) {
    const v1::GenerateChoice& choice = response.choices(i);
    EXPECT_EQ(choice.index(), i);
    v1::GenerateResponse single;
    ASSERT_TRUE(generate(sampled(1, 77 + i, 6), &single).ok());
    EXPECT_EQ(choice.text(), single.text()) << "sample " << i;
    EXPECT_EQ(choice.tokens_size(), 6);
    EXPECT_EQ(choice.finish().usage().completion_tokens(), 6);
    EXPECT_EQ(choice.finish().reason(), v1::FINISH_REASON_LENGTH);
    texts.insert(choice.text());
  }
  EXPECT_GT(texts.size(), 1u) << "four seeds gave one text";
  EXPECT_EQ(response.system_fingerprint(), fingerprint());
  EXPECT_EQ(response.system_fingerprint().substr(0, 3), "fp_");
}

TEST_F(GrpcApiFieldsTest, StreamMessagesNameTheirSample) {
  v1::GenerateResponse whole;
  ASSERT_TRUE(generate(sampled(2, 5, 8), &whole).ok());
  std::vector<v1::GenerateStreamResponse> messages;
  const grpc::Status status = stream(sampled(2, 5, 8), &messages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::map<int, std::string> texts;
  std::map<int, int> finishes;
  for (const auto& m : messages) {
    for (const auto& t : m.tokens()) texts[m.index()] += t.text();
    if (m.has_finish()) {
      texts[m.index()] += m.finish().text();
      ++finishes[m.index()];
    }
    EXPECT_EQ(m.system_fingerprint(), whole.system_fingerprint());
  }
  EXPECT_EQ(finishes, (std::map<int, int>{{0, 1}, {1, 1}}));
  EXPECT_EQ(texts[0], whole.choices(0).text());
  EXPECT_EQ(texts[1], whole.choices(1).text());
  EXPECT_TRUE(messages.back().has_finish());
}

// Constrained decoding over gRPC: the output is one of the choices / parses as the schema asks;
// an invalid schema is INVALID_ARGUMENT naming the field.
TEST_F(GrpcApiFieldsTest, StructuredOutputConstrainsTheOutput) {
  v1::GenerateRequest request;
  request.set_text("The capital of France is");
  request.set_max_tokens(64);
  request.set_temperature(0);
  auto* choice = request.mutable_structured_output()->mutable_choice();
  choice->add_choices("red");
  choice->add_choices("green blue");
  v1::GenerateResponse response;
  grpc::Status status = generate(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.text() == "red" || response.text() == "green blue") << response.text();
  EXPECT_EQ(response.finish().reason(), v1::FINISH_REASON_STOP);

  request.mutable_structured_output()->set_json_schema(
      R"({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
          "additionalProperties": false})");
  status = generate(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const nlohmann::json parsed = nlohmann::json::parse(response.text(), nullptr, false);
  ASSERT_TRUE(parsed.is_object()) << response.text();
  EXPECT_TRUE(parsed.contains("n") && parsed["n"].is_number_integer()) << response.text();
  EXPECT_EQ(parsed.size(), 1u);

  request.mutable_structured_output()->set_regex("(unclosed");
  status = generate(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("'structured_output.regex'"), std::string::npos)
      << status.error_message();
}

// n > 1 with structured_output: each sibling has its own matcher over the one compiled
// constraint, so every sample is one of the choices, and sample i is still seed + i's output.
TEST_F(GrpcApiFieldsTest, NSamplesEachHoldToTheConstraint) {
  const std::vector<std::string> choices = {"red", "green blue", "yellow", "purple haze"};
  const auto constrained = [&](int32_t n, uint64_t seed) {
    v1::GenerateRequest request = sampled(n, seed, 16);
    request.set_ignore_eos(false);
    auto* choice = request.mutable_structured_output()->mutable_choice();
    for (const std::string& c : choices) choice->add_choices(c);
    return request;
  };
  v1::GenerateResponse response;
  grpc::Status status = generate(constrained(4, 21), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.choices_size(), 4);
  for (int i = 0; i < 4; ++i) {
    const v1::GenerateChoice& choice = response.choices(i);
    EXPECT_NE(std::find(choices.begin(), choices.end(), choice.text()), choices.end())
        << "sample " << i << ": " << choice.text();
    EXPECT_EQ(choice.finish().reason(), v1::FINISH_REASON_STOP);
    v1::GenerateResponse single;
    ASSERT_TRUE(generate(constrained(1, 21 + i), &single).ok());
    EXPECT_EQ(choice.text(), single.text()) << "sample " << i;
  }
  std::vector<v1::GenerateStreamResponse> messages;
  status = stream(constrained(4, 21), &messages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::map<int, std::string> texts;
  for (const auto& m : messages) {
    for (const auto& t : m.tokens()) texts[m.index()] += t.text();
    if (m.has_finish()) texts[m.index()] += m.finish().text();
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(texts[i], response.choices(i).text()) << "sample " << i;
}

TEST_F(GrpcApiFieldsTest, EchoPutsThePromptFirst) {
  v1::GenerateRequest request;
  request.set_text(kPrompt);
  request.set_max_tokens(6);
  request.set_temperature(0);
  v1::GenerateResponse plain, echoed;
  ASSERT_TRUE(generate(request, &plain).ok());
  request.set_echo(true);
  ASSERT_TRUE(generate(request, &echoed).ok());
  EXPECT_EQ(echoed.text(), kPrompt + plain.text());
  std::vector<v1::GenerateStreamResponse> messages;
  ASSERT_TRUE(stream(request, &messages).ok());
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages.front().echo_text(), kPrompt);
  for (size_t i = 1; i < messages.size(); ++i) EXPECT_TRUE(messages[i].echo_text().empty());

  request.set_logprobs(1);
  v1::GenerateResponse refused;
  grpc::Status status = generate(request, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("'echo'"), std::string::npos) << status.error_message();
  v1::GenerateRequest chat;
  chat.mutable_chat()->add_messages()->set_content("hi");
  chat.mutable_chat()->mutable_messages(0)->set_role("user");
  chat.set_echo(true);
  status = generate(chat, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("'echo'"), std::string::npos) << status.error_message();
}

// prompt_logprobs: one entry per prompt token (the first without logprobs), each with its
// rank and the asked alternatives; the same in Generate and GenerateStream, once for n samples;
// the last prompt token's entry, on a prompt extended by the first generated token, is that
// token's generated logprob (a prefill row against a decode step: within float error).
TEST_F(GrpcApiFieldsTest, PromptLogprobsScoreThePromptTokens) {
  v1::GenerateRequest request;
  request.set_text(kPrompt);
  request.set_max_tokens(2);
  request.set_temperature(0);
  request.set_prompt_logprobs(3);
  v1::GenerateResponse response;
  ASSERT_TRUE(generate(request, &response).ok());
  const auto& prompt = response.prompt_logprobs();
  ASSERT_EQ(prompt.size(), response.finish().usage().prompt_tokens());
  ASSERT_GT(prompt.size(), 2);
  EXPECT_FALSE(prompt[0].has_logprobs());
  for (int t = 1; t < prompt.size(); ++t) {
    const v1::PositionLogprobs& p = prompt[t].logprobs();
    ASSERT_EQ(p.top_size(), 3) << t;
    EXPECT_LE(p.logprob(), 0.0f);
    int above = 0;
    for (const auto& alternative : p.top()) above += alternative.logprob() > p.logprob() ? 1 : 0;
    if (p.rank() <= 3) {
      EXPECT_EQ(p.rank(), above + 1) << t;
    } else {
      EXPECT_EQ(above, 3) << t;
    }
    EXPECT_FALSE(prompt[t].token().empty());
  }
  EXPECT_TRUE(response.tokens(0).logprobs().top().empty());  // generated: logprobs not asked

  std::vector<v1::GenerateStreamResponse> messages;
  ASSERT_TRUE(stream(request, &messages).ok());
  int carrying = 0;
  for (const auto& m : messages) {
    if (m.prompt_logprobs_size() == 0) continue;
    ++carrying;
    ASSERT_EQ(m.prompt_logprobs_size(), prompt.size());
    for (int t = 1; t < prompt.size(); ++t) {
      EXPECT_EQ(m.prompt_logprobs(t).logprobs().logprob(), prompt[t].logprobs().logprob());
    }
  }
  EXPECT_EQ(carrying, 1);

  request.set_n(2);
  request.set_temperature(1.0f);
  request.set_seed(3);
  v1::GenerateResponse two;
  ASSERT_TRUE(generate(request, &two).ok());
  ASSERT_EQ(two.prompt_logprobs_size(), prompt.size());
  EXPECT_EQ(two.prompt_logprobs(1).logprobs().logprob(), prompt[1].logprobs().logprob());

  v1::GenerateRequest plain;
  plain.set_text(kPrompt);
  plain.set_max_tokens(1);
  plain.set_temperature(0);
  plain.set_logprobs(0);
  v1::GenerateResponse first;
  ASSERT_TRUE(generate(plain, &first).ok());
  v1::GenerateRequest longer;
  longer.set_text(kPrompt + first.text());
  longer.set_max_tokens(1);
  longer.set_prompt_logprobs(0);
  v1::GenerateResponse scored;
  ASSERT_TRUE(generate(longer, &scored).ok());
  ASSERT_EQ(scored.prompt_logprobs_size(), prompt.size() + 1) << "the extended prompt's tokens";
  const v1::PromptToken& last = scored.prompt_logprobs(prompt.size());
  EXPECT_EQ(last.token_id(), first.tokens(0).token_id());
  EXPECT_NEAR(last.logprobs().logprob(), first.tokens(0).logprobs().logprob(), 2e-3);
  EXPECT_EQ(last.logprobs().rank(), first.tokens(0).logprobs().rank());
}

TEST_F(GrpcApiFieldsTest, ContinueFinalMessageLeavesTheTurnOpen) {
  v1::GenerateRequest request;
  auto* messages = request.mutable_chat();
  messages->add_messages()->set_role("user");
  messages->mutable_messages(0)->set_content("Complete the sentence.");
  messages->add_messages()->set_role("assistant");
  messages->mutable_messages(1)->set_content("The sky is");
  request.set_max_tokens(2);
  request.set_temperature(0);
  request.set_add_generation_prompt(false);
  v1::GenerateResponse closed, open;
  ASSERT_TRUE(generate(request, &closed).ok());
  request.set_continue_final_message(true);
  ASSERT_TRUE(generate(request, &open).ok());
  // ChatML: the open turn lacks "<|im_end|>" and "\n", two tokens.
  EXPECT_EQ(open.finish().usage().prompt_tokens(), closed.finish().usage().prompt_tokens() - 2);

  (*request.mutable_chat_template_kwargs())["enable_thinking"] = "false";
  v1::GenerateResponse refused;
  const grpc::Status status = generate(request, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("'chat_template_kwargs.enable_thinking'"),
            std::string::npos)
      << status.error_message();
}

// Tokenize renders chat as Generate does, with the same options, and names each token.
TEST_F(GrpcApiFieldsTest, TokenizeTakesTheChatOptionsAndReturnsTokenStrings) {
  const auto tokenize = [](const v1::TokenizeRequest& request, v1::TokenizeResponse* out) {
    grpc::ClientContext context;
    prepare(context);
    return stub_->Tokenize(&context, request, out);
  };
  v1::TokenizeRequest request;
  request.set_text("Hello world");
  request.set_return_token_strs(true);
  v1::TokenizeResponse text;
  ASSERT_TRUE(tokenize(request, &text).ok());
  ASSERT_EQ(text.token_strs_size(), text.token_ids_size());
  EXPECT_EQ(text.token_strs(text.token_strs_size() - 1), "\xC4\xA0world");  // "Ġworld"

  v1::TokenizeRequest chat;
  chat.mutable_chat()->add_messages()->set_role("user");
  chat.mutable_chat()->mutable_messages(0)->set_content("Hi");
  chat.mutable_chat()->add_messages()->set_role("assistant");
  chat.mutable_chat()->mutable_messages(1)->set_content("Hel");
  chat.set_add_generation_prompt(false);
  v1::TokenizeResponse closed, open;
  ASSERT_TRUE(tokenize(chat, &closed).ok());
  chat.set_continue_final_message(true);
  ASSERT_TRUE(tokenize(chat, &open).ok());
  ASSERT_EQ(open.token_ids_size(), closed.token_ids_size() - 2);  // "<|im_end|>", "\n"
  EXPECT_TRUE(
      std::equal(open.token_ids().begin(), open.token_ids().end(), closed.token_ids().begin()));
  (*chat.mutable_chat_template_kwargs())["enable_thinking"] = "false";
  v1::TokenizeResponse refused;
  const grpc::Status status = tokenize(chat, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("enable_thinking"), std::string::npos);
}

TEST_F(GrpcApiFieldsTest, UnknownModelIsNotFound) {
  v1::GenerateRequest request = sampled(1, 1, 2);
  request.set_model("gpt-4");
  v1::GenerateResponse response;
  grpc::Status status = generate(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("'gpt-4'"), std::string::npos) << status.error_message();
  std::vector<v1::GenerateStreamResponse> messages;
  status = stream(request, &messages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(messages.empty());
}

TEST_F(GrpcApiFieldsTest, ReflectionV1AndV1alphaResolveHealth) {
  for (const std::string version : {"v1", "v1alpha"}) {
    const std::string method =
        "/grpc.reflection." + version + ".ServerReflection/ServerReflectionInfo";
    rv1::ServerReflectionRequest list;
    list.set_list_services("");
    rv1::ServerReflectionResponse reply;
    grpc::Status status = ReflectOnce(channel_, method, list).wait(&reply);
    ASSERT_TRUE(status.ok()) << version << ": " << status.error_message();
    std::set<std::string> services;
    for (const auto& s : reply.list_services_response().service()) services.insert(s.name());
    EXPECT_TRUE(services.count("grpc.health.v1.Health")) << version;
    EXPECT_TRUE(services.count("lightserve.v1.Generation")) << version;

    for (const std::string symbol : {"grpc.health.v1.Health", "lightserve.v1.Generation"}) {
      rv1::ServerReflectionRequest describe;
      describe.set_file_containing_symbol(symbol);
      status = ReflectOnce(channel_, method, describe).wait(&reply);
      ASSERT_TRUE(status.ok()) << version << ": " << status.error_message();
      ASSERT_FALSE(reply.has_error_response())
          << version << " " << symbol << ": " << reply.error_response().error_message();
      ASSERT_GT(reply.file_descriptor_response().file_descriptor_proto_size(), 0);
      google::protobuf::FileDescriptorProto file;
      ASSERT_TRUE(file.ParseFromString(reply.file_descriptor_response().file_descriptor_proto(0)));
      const std::string name = symbol.substr(symbol.rfind('.') + 1);
      bool found = false;
      for (const auto& service : file.service()) {
        if (service.name() != name) continue;
        found = true;
        EXPECT_GE(service.method_size(), 2) << version << " " << symbol;
      }
      EXPECT_TRUE(found) << version << ": " << symbol << " is not in " << file.name();
    }
    rv1::ServerReflectionRequest missing;
    missing.set_file_containing_symbol("no.such.Service");
    ASSERT_TRUE(ReflectOnce(channel_, method, missing).wait(&reply).ok());
    EXPECT_EQ(reply.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  }
  int serving = 0;
  ASSERT_TRUE(lightserve::testing::health_check(channel_, "", &serving).ok());
  EXPECT_EQ(serving, 1);
}

}  // namespace
