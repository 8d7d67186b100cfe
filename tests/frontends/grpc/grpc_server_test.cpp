// The gRPC frontend against the real daemon (docs/design.md §10): `lightserve serve` runs as a
// child process on ephemeral ports and a C++ client drives lightserve.v1.Generation through its
// generated stub, plus grpc.health.v1 and reflection through a generic stub (their protos are not
// installed, so those few bytes are written by hand).
//
// Suites, one daemon each (ctest runs every test in its own process, so each test starts one):
//   GrpcServerTest   API key required; generation, streaming, cancel, tokenizer, info, errors
//   GrpcOverloadTest --max-running 1 --max-waiting 2: surplus calls refused at once
//   GrpcDrainTest    SIGTERM: health NOT_SERVING, new calls UNAVAILABLE, in-flight call completes
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "lightserve/v1/generation.grpc.pb.h"
#include "tests/support/cli_runner.h"
#include "tests/support/daemon_process.h"
#include "tests/support/grpc_daemon_suite.h"
#include "tests/support/grpc_raw.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = lightserve::v1;
using lightserve::testing::DaemonProcess;
using Clock = std::chrono::steady_clock;

const std::string kModel = LIGHTSERVE_TEST_MODEL;
const std::string kApiKey = "test-key-4d1f";
constexpr const char* kPrompt = "The capital of France is";

// The daemon flags every suite shares: a small arena and context keep start-up and tests fast.
std::vector<std::string> daemon_args(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--model",     kModel,  "--http-port",     "-1",
                                   "--kv-budget", "64MiB", "--context",       "1024",
                                   "--threads",   "2",     "--drain-timeout", "20"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// A client context with a deadline and, unless `key` is empty, the API key.
void prepare(grpc::ClientContext& context, const std::string& key = kApiKey, double seconds = 60) {
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
}

v1::GenerateRequest text_request(const std::string& text, int32_t max_tokens) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.set_max_tokens(max_tokens);
  request.set_temperature(0);
  return request;
}

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateStreamResponse> messages;
  std::string text;  // every token text and the finish text, concatenated
  int num_tokens = 0;
};

StreamResult read_stream(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                         const std::string& key = kApiKey) {
  StreamResult result;
  grpc::ClientContext context;
  prepare(context, key);
  auto reader = stub.GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  while (reader->Read(&message)) {
    for (const auto& token : message.tokens()) result.text += token.text();
    result.num_tokens += message.tokens_size();
    if (message.has_finish()) result.text += message.finish().text();
    result.messages.push_back(message);
  }
  result.status = reader->Finish();
  return result;
}

// Raw calls with the test's key (tests/support/grpc_raw.h).
grpc::Status raw_unary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                       const std::string& request_bytes, std::string* reply = nullptr) {
  return lightserve::testing::raw_unary(channel, method, request_bytes, reply, kApiKey);
}
using lightserve::testing::health_check;

// One daemon per suite, shared by its tests; the derived suite names its extra flags.
class DaemonSuite : public lightserve::testing::GrpcDaemonSuite {
 protected:
  static void start_daemon(const std::vector<std::string>& extra) {
    GrpcDaemonSuite::start_daemon(kModel, daemon_args(extra));
  }

  // Polls GetServerInfo until nothing is in flight and no KV is held (or 10 s pass).
  static v1::Load wait_until_idle() {
    v1::GetServerInfoResponse info;
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      grpc::ClientContext context;
      prepare(context);
      info.Clear();
      if (stub_->GetServerInfo(&context, {}, &info).ok() && info.load().num_in_flight() == 0 &&
          info.load().num_running() == 0 && info.load().num_used_pages() == 0) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return info.load();
  }
};

// ---------------------------------------------------------------------------------------------

class GrpcServerTest : public DaemonSuite {
 protected:
  static void SetUpTestSuite() { start_daemon({"--api-key", kApiKey}); }

  static grpc::Status generate(const v1::GenerateRequest& request, v1::GenerateResponse* response,
                               const std::string& key = kApiKey) {
    grpc::ClientContext context;
    prepare(context, key);
    return stub_->Generate(&context, request, response);
  }
};

TEST_F(GrpcServerTest, GenerateReturnsTextTokensUsageAndTimings) {
  v1::GenerateResponse response;
  const grpc::Status status = generate(text_request(kPrompt, 8), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GT(response.tokens_size(), 0);
  EXPECT_LE(response.tokens_size(), 8);
  std::string text;
  for (const auto& token : response.tokens()) text += token.text();
  EXPECT_EQ(response.text(), text + response.finish().text());
  EXPECT_FALSE(response.text().empty());
  const v1::GenerateFinish& finish = response.finish();
  EXPECT_NE(finish.reason(), v1::FINISH_REASON_UNSPECIFIED);
  if (finish.reason() == v1::FINISH_REASON_LENGTH) {
    EXPECT_EQ(response.tokens_size(), 8);
  }
  EXPECT_GT(finish.usage().prompt_tokens(), 0);
  EXPECT_GE(finish.usage().completion_tokens(), response.tokens_size());
  EXPECT_EQ(finish.usage().total_tokens(),
            finish.usage().prompt_tokens() + finish.usage().completion_tokens());
  EXPECT_GT(finish.timings().e2e_seconds(), 0);
  EXPECT_GE(finish.timings().e2e_seconds(), finish.timings().time_to_first_token_seconds());
  EXPECT_GE(finish.timings().time_to_first_token_seconds(), finish.timings().queue_seconds());
}

// The request id comes back in the initial metadata: the client's when usable, else a made one;
// on a stream and on a refusal too.
TEST_F(GrpcServerTest, RequestIdsComeBackInInitialMetadata) {
  const auto tag_of = [](const grpc::ClientContext& context) {
    const auto& metadata = context.GetServerInitialMetadata();
    const auto it = metadata.find("x-request-id");
    return it == metadata.end() ? std::string() : std::string(it->second.data(), it->second.size());
  };
  {
    grpc::ClientContext context;
    prepare(context);
    context.AddMetadata("x-request-id", "grpc-client-7");
    v1::GenerateResponse response;
    ASSERT_TRUE(stub_->Generate(&context, text_request(kPrompt, 2), &response).ok());
    EXPECT_EQ(tag_of(context), "grpc-client-7");
  }
  {
    grpc::ClientContext context;
    prepare(context);
    auto reader = stub_->GenerateStream(&context, text_request(kPrompt, 2));
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
    const std::string made = tag_of(context);
    EXPECT_EQ(made.rfind("req-", 0), 0u) << made;
    EXPECT_EQ(made.size(), 20u) << made;
  }
  {
    grpc::ClientContext context;
    prepare(context);
    context.AddMetadata("x-request-id", "refused-1");
    v1::GenerateResponse response;
    const grpc::Status status = stub_->Generate(&context, text_request(kPrompt, 0), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(tag_of(context), "refused-1");
  }
}

TEST_F(GrpcServerTest, GreedyGenerateEqualsTheCliGenerate) {
  v1::GenerateResponse response;
  const grpc::Status status = generate(text_request(kPrompt, 24), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto cli = lightserve::testing::run_lightserve("generate -q --model " + kModel +
                                                       " --temperature 0 -n 24 --prompt '" +
                                                       std::string(kPrompt) + "'");
  ASSERT_EQ(cli.code, 0) << cli.err;
  EXPECT_EQ(response.text() + "\n", cli.out);
}

TEST_F(GrpcServerTest, SeedAndPenaltiesReachTheSampler) {
  v1::GenerateRequest request = text_request(kPrompt, 8);
  request.set_temperature(0.9f);
  request.set_seed(7);
  v1::GenerateResponse first, second;
  ASSERT_TRUE(generate(request, &first).ok());
  ASSERT_TRUE(generate(request, &second).ok());
  EXPECT_EQ(first.text(), second.text()) << "same seed, different output";

  // Greedy 24 tokens of this prompt repeat a phrase; a frequency penalty changes that.
  v1::GenerateResponse plain, penalized;
  ASSERT_TRUE(generate(text_request(kPrompt, 24), &plain).ok());
  request = text_request(kPrompt, 24);
  request.set_frequency_penalty(2.0f);
  ASSERT_TRUE(generate(request, &penalized).ok());
  EXPECT_NE(plain.text(), penalized.text());
}

TEST_F(GrpcServerTest, StopStringEndsTheOutputWithoutIt) {
  // The greedy continuation is " Paris.\n\nThe United States ...".
  v1::GenerateRequest request = text_request(kPrompt, 24);
  request.add_stop(".\n");
  v1::GenerateResponse response;
  ASSERT_TRUE(generate(request, &response).ok());
  EXPECT_EQ(response.text(), " Paris");
  EXPECT_EQ(response.finish().reason(), v1::FINISH_REASON_STOP);
  EXPECT_FALSE(response.finish().has_stop_token_id());

  const StreamResult streamed = read_stream(*stub_, request);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.text, " Paris");
}

TEST_F(GrpcServerTest, StreamCarriesTheSameTokensAsUnaryAndLogprobs) {
  v1::GenerateRequest request = text_request(kPrompt, 12);
  request.set_logprobs(3);
  v1::GenerateResponse unary;
  ASSERT_TRUE(generate(request, &unary).ok());
  const StreamResult streamed = read_stream(*stub_, request);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  ASSERT_FALSE(streamed.messages.empty());
  for (size_t i = 0; i + 1 < streamed.messages.size(); ++i) {
    EXPECT_FALSE(streamed.messages[i].has_finish()) << "message " << i;
    EXPECT_GT(streamed.messages[i].tokens_size(), 0) << "message " << i;
  }
  const v1::GenerateStreamResponse& last = streamed.messages.back();
  ASSERT_TRUE(last.has_finish());
  EXPECT_EQ(streamed.text, unary.text());
  EXPECT_EQ(streamed.num_tokens, unary.tokens_size());
  EXPECT_EQ(last.finish().usage().completion_tokens(), unary.finish().usage().completion_tokens());
  for (const auto& message : streamed.messages) {
    for (const auto& token : message.tokens()) {
      ASSERT_TRUE(token.has_logprobs());
      ASSERT_EQ(token.logprobs().top_size(), 3);
      EXPECT_LE(token.logprobs().logprob(), 0.0f);
      // Greedy: the sampled token is the most likely one.
      EXPECT_EQ(token.logprobs().top(0).token_id(), token.token_id());
      EXPECT_FLOAT_EQ(token.logprobs().top(0).logprob(), token.logprobs().logprob());
      EXPECT_GE(token.logprobs().top(0).logprob(), token.logprobs().top(1).logprob());
    }
  }
}

TEST_F(GrpcServerTest, CancelMidStreamAbortsTheRequestAndFreesItsKv) {
  v1::GenerateRequest request = text_request(kPrompt, 400);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  prepare(context);
  auto reader = stub_->GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  int num_tokens = 0;
  while (num_tokens < 3 && reader->Read(&message)) num_tokens += message.tokens_size();
  ASSERT_GE(num_tokens, 3);
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  const v1::Load load = wait_until_idle();
  EXPECT_EQ(load.num_in_flight(), 0);
  EXPECT_EQ(load.num_running(), 0);
  EXPECT_EQ(load.num_used_pages(), 0);
  // And the server still serves.
  v1::GenerateResponse response;
  const grpc::Status status = generate(text_request(kPrompt, 4), &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.tokens_size(), 0);
}

// Calls that go away in every way at once: cancelled streams, streams read to the end, unary
// calls past their deadline. The daemon survives, and no request or KV is left behind.
TEST_F(GrpcServerTest, ConcurrentCallsThatGoAwayLeaveNothingBehind) {
  constexpr int kCalls = 12;
  std::vector<grpc::StatusCode> codes(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&codes, i] {
      v1::GenerateRequest request = text_request(kPrompt, i % 3 == 1 ? 6 : 300);
      request.set_ignore_eos(true);
      grpc::ClientContext context;
      if (i % 3 == 2) {  // unary, past its deadline
        prepare(context, kApiKey, 0.3);
        v1::GenerateResponse response;
        codes[i] = stub_->Generate(&context, request, &response).error_code();
        return;
      }
      prepare(context);
      auto reader = stub_->GenerateStream(&context, request);
      v1::GenerateStreamResponse message;
      if (i % 3 == 0 && reader->Read(&message)) context.TryCancel();  // cancel after one message
      while (reader->Read(&message)) {
      }
      codes[i] = reader->Finish().error_code();
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kCalls; ++i) {
    const grpc::StatusCode expected = i % 3 == 0   ? grpc::StatusCode::CANCELLED
                                      : i % 3 == 1 ? grpc::StatusCode::OK
                                                   : grpc::StatusCode::DEADLINE_EXCEEDED;
    EXPECT_EQ(codes[i], expected) << "call " << i;
  }
  const v1::Load load = wait_until_idle();
  EXPECT_EQ(load.num_in_flight(), 0);
  EXPECT_EQ(load.num_waiting(), 0);
  EXPECT_EQ(load.num_used_pages(), 0);
  EXPECT_TRUE(daemon_->running());
}

TEST_F(GrpcServerTest, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Hello, world! Numbers 12345 and ünïcödé ✓.";
  v1::TokenizeRequest tokenize;
  tokenize.set_text(text);
  v1::TokenizeResponse ids;
  {
    grpc::ClientContext context;
    prepare(context);
    ASSERT_TRUE(stub_->Tokenize(&context, tokenize, &ids).ok());
  }
  ASSERT_GT(ids.token_ids_size(), 5);
  EXPECT_EQ(ids.max_context_tokens(), 1024);
  v1::DetokenizeRequest detokenize;
  detokenize.mutable_token_ids()->CopyFrom(ids.token_ids());
  v1::DetokenizeResponse back;
  {
    grpc::ClientContext context;
    prepare(context);
    ASSERT_TRUE(stub_->Detokenize(&context, detokenize, &back).ok());
  }
  EXPECT_EQ(back.text(), text);

  // A cut multi-byte character comes back as U+FFFD, never as invalid UTF-8.
  detokenize.mutable_token_ids()->Truncate(ids.token_ids_size() - 2);
  {
    grpc::ClientContext context;
    prepare(context);
    ASSERT_TRUE(stub_->Detokenize(&context, detokenize, &back).ok());
  }
  EXPECT_TRUE(text.starts_with(back.text()) || back.text().ends_with("\xEF\xBF\xBD"));
}

TEST_F(GrpcServerTest, ChatTokenizeCountsWhatGenerateCounts) {
  v1::ChatMessages chat;
  auto* message = chat.add_messages();
  message->set_role("user");
  message->set_content("Say hello.");
  v1::TokenizeRequest tokenize;
  *tokenize.mutable_chat() = chat;
  v1::TokenizeResponse ids;
  grpc::ClientContext context;
  prepare(context);
  ASSERT_TRUE(stub_->Tokenize(&context, tokenize, &ids).ok());

  v1::GenerateRequest request;
  *request.mutable_chat() = chat;
  request.set_max_tokens(2);
  v1::GenerateResponse response;
  ASSERT_TRUE(generate(request, &response).ok());
  EXPECT_EQ(response.finish().usage().prompt_tokens(), ids.token_ids_size());
}

TEST_F(GrpcServerTest, ModelAndServerInfo) {
  v1::GetModelInfoResponse model;
  {
    grpc::ClientContext context;
    prepare(context);
    ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &model).ok());
  }
  EXPECT_EQ(model.name(), fs::path(kModel).stem().string());
  EXPECT_EQ(model.architecture(), "llama");
  EXPECT_EQ(model.num_layers(), 30);
  EXPECT_EQ(model.vocab_size(), 49152);
  EXPECT_EQ(model.context_length(), 8192);
  EXPECT_TRUE(model.has_chat_template());

  v1::GetServerInfoResponse server;
  {
    grpc::ClientContext context;
    prepare(context);
    ASSERT_TRUE(stub_->GetServerInfo(&context, {}, &server).ok());
  }
  EXPECT_EQ(server.capacity().budget_bytes(), 64ll << 20);
  EXPECT_EQ(server.capacity().num_pages(), (64ll << 20) / server.capacity().page_bytes());
  EXPECT_EQ(server.capacity().block_size(), 16);
  EXPECT_EQ(server.capacity().page_bytes(), 16 * 768);
  // In sequences of 32 tokens (a short request costs what full attention costs) and of the
  // context (sink + window = 1024 = the context here).
  ASSERT_EQ(server.capacity().sequences_size(), 2);
  EXPECT_EQ(server.capacity().sequences(0).tokens(), 32);
  EXPECT_EQ(server.capacity().sequences(0).hybrid_pages(), 60);
  EXPECT_EQ(server.capacity().sequences(0).max_hybrid_sequences(),
            server.capacity().sequences(0).max_full_sequences());
  EXPECT_EQ(server.capacity().sequences(1).tokens(), 1024);
  EXPECT_EQ(server.capacity().context_tokens(), 1024);
  EXPECT_GE(server.capacity().max_hybrid_sequences(), 1);
  EXPECT_EQ(server.lighttransfer().mode(), "online");
  EXPECT_EQ(server.lighttransfer().sink(), 4);
  EXPECT_EQ(server.lighttransfer().num_full_layers() + server.lighttransfer().num_lazy_layers(),
            30);
  EXPECT_EQ(server.limits().context_tokens(), 1024);
  EXPECT_EQ(server.limits().max_logprobs(), 20);
  EXPECT_TRUE(server.ready());
  EXPECT_FALSE(server.draining());
  // Its --device (LIGHTSERVE_DEVICE, else the CPU), one device: the CPU or one GPU (load
  // testers' throughput per device).
  const char* env_device = std::getenv("LIGHTSERVE_DEVICE");
  EXPECT_EQ(server.device(), env_device != nullptr && *env_device != '\0' ? env_device : "cpu");
  EXPECT_EQ(server.num_devices(), 1);
}

TEST_F(GrpcServerTest, HealthServesWithoutAKey) {
  for (const std::string service : {"", "lightserve.v1.Generation"}) {
    int serving = 0;
    const grpc::Status status = health_check(channel_, service, &serving);
    ASSERT_TRUE(status.ok()) << "'" << service << "': " << status.error_message();
    EXPECT_EQ(serving, 1) << "'" << service << "' is not SERVING";
  }
  int serving = 0;
  EXPECT_EQ(health_check(channel_, "no.such.Service", &serving).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// Reflection (v1 and v1alpha, every listed service resolvable): grpc_api_fields_test.cpp.

TEST_F(GrpcServerTest, MissingOrWrongApiKeyIsUnauthenticated) {
  v1::GenerateResponse response;
  for (const std::string key : {"", "wrong-key"}) {
    const grpc::Status unary = generate(text_request(kPrompt, 2), &response, key);
    EXPECT_EQ(unary.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "key '" << key << "'";
    EXPECT_NE(unary.error_message().find("API key"), std::string::npos) << unary.error_message();
    const StreamResult streamed = read_stream(*stub_, text_request(kPrompt, 2), key);
    EXPECT_EQ(streamed.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(streamed.num_tokens, 0);
    grpc::ClientContext context;
    prepare(context, key);
    v1::GetServerInfoResponse info;
    EXPECT_EQ(stub_->GetServerInfo(&context, {}, &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
}

// Every bad request gets its code at once, on both generation calls, with a message naming it.
TEST_F(GrpcServerTest, BadRequestsAreRefusedNamingTheProblem) {
  struct Case {
    const char* name;
    std::function<void(v1::GenerateRequest&)> edit;
    std::vector<grpc::StatusCode> codes;
    std::string message_part;
  };
  const auto invalid = std::vector{grpc::StatusCode::INVALID_ARGUMENT};
  const std::string long_text = [] {
    std::string s;
    for (int i = 0; i < 2000; ++i) s += " cat";
    return s;
  }();
  const std::string fitting_text = long_text.substr(0, 4 * 1000);  // 1000 tokens
  const std::vector<Case> cases = {
      {"no prompt", [](auto& r) { r.clear_text(); }, invalid, "prompt"},
      {"empty text", [](auto& r) { r.set_text(""); }, invalid, "'text' is empty"},
      {"empty token ids", [](auto& r) { r.mutable_token_ids(); }, invalid,
       "'token_ids.ids' is empty"},
      {"unknown token id", [](auto& r) { r.mutable_token_ids()->add_ids(999999); }, invalid,
       "999999"},
      {"negative token id", [](auto& r) { r.mutable_token_ids()->add_ids(-5); }, invalid, "-5"},
      {"empty chat", [](auto& r) { r.mutable_chat(); }, invalid, "messages"},
      {"bad chat role",
       [](auto& r) {
         auto* m = r.mutable_chat()->add_messages();
         m->set_role("robot");
         m->set_content("hi");
       },
       invalid, "role"},
      {"unknown model",
       [](auto& r) { r.set_model("gpt-17"); },
       {grpc::StatusCode::NOT_FOUND},
       "gpt-17"},
      {"max_tokens 0", [](auto& r) { r.set_max_tokens(0); }, invalid, "max_tokens"},
      {"max_tokens huge",
       [](auto& r) { r.set_max_tokens(1000000); },
       {grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::OUT_OF_RANGE},
       "max_tokens"},
      {"temperature -1", [](auto& r) { r.set_temperature(-1); }, invalid, "temperature"},
      {"top_p 2", [](auto& r) { r.set_top_p(2); }, invalid, "top_p"},
      {"min_p 1.5", [](auto& r) { r.set_min_p(1.5f); }, invalid, "min_p"},
      {"top_k -3", [](auto& r) { r.set_top_k(-3); }, invalid, "top_k"},
      {"repetition_penalty 0", [](auto& r) { r.set_repetition_penalty(0); }, invalid,
       "repetition_penalty"},
      {"presence_penalty 3", [](auto& r) { r.set_presence_penalty(3); }, invalid,
       "presence_penalty"},
      {"frequency_penalty -2.5", [](auto& r) { r.set_frequency_penalty(-2.5f); }, invalid,
       "frequency_penalty"},
      {"logprobs 99", [](auto& r) { r.set_logprobs(99); }, invalid, "logprobs"},
      {"logprobs -2", [](auto& r) { r.set_logprobs(-2); }, invalid, "logprobs"},
      {"empty stop string", [](auto& r) { r.add_stop(""); }, invalid, "stop"},
      {"bad lighttransfer mode",
       [](auto& r) { r.mutable_lighttransfer()->set_mode(static_cast<v1::LightTransferMode>(7)); },
       invalid, "lighttransfer.mode"},
      {"prompt over the context",
       [&](auto& r) { r.set_text(long_text); },
       {grpc::StatusCode::OUT_OF_RANGE},
       "1024"},
      {"negative stop token id", [](auto& r) { r.add_stop_token_ids(-1); }, invalid,
       "'stop_token_ids[0]' = -1 is not a token id"},
      {"stop token id past the vocabulary", [](auto& r) { r.add_stop_token_ids(49152); }, invalid,
       "'stop_token_ids[0]' = 49152 is not a token id"},
      {"prompt + max_tokens over the context",
       [&](auto& r) {
         r.set_text(fitting_text);
         r.set_max_tokens(500);
       },
       {grpc::StatusCode::OUT_OF_RANGE},
       "1024"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = text_request(kPrompt, 4);
    c.edit(request);
    v1::GenerateResponse response;
    const auto start = Clock::now();
    const grpc::Status unary = generate(request, &response);
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(2)) << c.name << ": not refused at once";
    EXPECT_NE(std::find(c.codes.begin(), c.codes.end(), unary.error_code()), c.codes.end())
        << c.name << ": code " << unary.error_code() << " (" << unary.error_message() << ")";
    EXPECT_NE(unary.error_message().find(c.message_part), std::string::npos)
        << c.name << ": '" << unary.error_message() << "' does not name " << c.message_part;
    const StreamResult streamed = read_stream(*stub_, request);
    EXPECT_EQ(streamed.status.error_code(), unary.error_code()) << c.name << " (stream)";
    EXPECT_EQ(streamed.status.error_message(), unary.error_message()) << c.name << " (stream)";
    EXPECT_TRUE(streamed.messages.empty()) << c.name << " (stream)";
  }
  EXPECT_EQ(wait_until_idle().num_in_flight(), 0);
}

TEST_F(GrpcServerTest, BadTokenizerAndWireInputs) {
  {  // an id outside the vocabulary
    v1::DetokenizeRequest request;
    request.add_token_ids(1);
    request.add_token_ids(49152);
    v1::DetokenizeResponse response;
    grpc::ClientContext context;
    prepare(context);
    const grpc::Status status = stub_->Detokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("'token_ids[1]' = 49152"), std::string::npos)
        << status.error_message();
  }
  {  // no input
    v1::TokenizeResponse response;
    grpc::ClientContext context;
    prepare(context);
    const grpc::Status status = stub_->Tokenize(&context, {}, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("input"), std::string::npos) << status.error_message();
  }
  // Bytes that are not the method's request message, on every method.
  for (const char* method : {"Generate", "GenerateStream", "Tokenize", "Detokenize"}) {
    const grpc::Status status = raw_unary(
        channel_, std::string("/lightserve.v1.Generation/") + method, std::string(12, '\xff'));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << status.error_code() << " " << status.error_message();
    EXPECT_NE(status.error_message().find("not a valid lightserve.v1."), std::string::npos)
        << method << ": " << status.error_message();
  }
  {  // a string field that is not UTF-8 (proto3 strings must be)
    v1::GenerateRequest request = text_request("ok", 2);
    std::string bytes = request.SerializeAsString();
    bytes.replace(bytes.find("ok"), 2, "\xff\xfe");
    const grpc::Status status = raw_unary(channel_, "/lightserve.v1.Generation/Generate", bytes);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  }
  {  // a message over limits.max_body_bytes (1 MiB by default)
    v1::GenerateResponse response;
    const grpc::Status status = generate(text_request(std::string(2 << 20, 'a'), 4), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  }
  {  // an unknown method
    const grpc::Status status = raw_unary(channel_, "/lightserve.v1.Generation/Nope", "");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
}

TEST_F(GrpcServerTest, ATakenPortStopsASecondDaemonWithTheAddressNamed) {
  const std::string port = std::to_string(daemon_->grpc_port());
  const DaemonProcess second = DaemonProcess::start(daemon_args({"--grpc-port", port}));
  ASSERT_FALSE(second.ok());
  // A usage error, found before the model loads (app/cli_serve.cpp check_port_free).
  EXPECT_NE(second.error().find("exit code 2"), std::string::npos) << second.error();
  EXPECT_NE(second.error().find("--grpc-port " + port), std::string::npos) << second.error();
  EXPECT_NE(second.error().find("cannot listen on 127.0.0.1:" + port), std::string::npos)
      << second.error();
}

// ---------------------------------------------------------------------------------------------

class GrpcOverloadTest : public DaemonSuite {
 protected:
  static void SetUpTestSuite() { start_daemon({"--max-running", "1", "--max-waiting", "2"}); }
};

TEST_F(GrpcOverloadTest, SurplusCallsAreRefusedAtOnceTheRestComplete) {
  constexpr int kCalls = 8;
  struct Outcome {
    grpc::Status status;
    int num_tokens = 0;
    double seconds = 0;
  };
  std::vector<Outcome> outcomes(kCalls);
  std::latch go(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest request = text_request(kPrompt, 24);
      request.set_ignore_eos(true);
      go.arrive_and_wait();
      const auto start = Clock::now();
      const StreamResult r = read_stream(*stub_, request, "");
      outcomes[i] = {r.status, r.num_tokens,
                     std::chrono::duration<double>(Clock::now() - start).count()};
    });
  }
  for (auto& t : threads) t.join();

  int num_ok = 0, num_refused = 0;
  double slowest_refusal = 0, fastest_completion = 1e9;
  for (const Outcome& o : outcomes) {
    if (o.status.ok()) {
      ++num_ok;
      EXPECT_EQ(o.num_tokens, 24);
      fastest_completion = std::min(fastest_completion, o.seconds);
    } else {
      ++num_refused;
      EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << o.status.error_message();
      EXPECT_NE(o.status.error_message().find("queue"), std::string::npos)
          << o.status.error_message();
      EXPECT_EQ(o.num_tokens, 0);
      slowest_refusal = std::max(slowest_refusal, o.seconds);
    }
  }
  EXPECT_GE(num_ok, 2);  // the queue holds 2 (a pending add counts until it runs)
  EXPECT_GE(num_refused, 1);
  if (num_refused > 0 && num_ok > 0) {
    EXPECT_LT(slowest_refusal, fastest_completion);
  }
  EXPECT_EQ(wait_until_idle().num_in_flight(), 0);
}

// ---------------------------------------------------------------------------------------------

class GrpcDrainTest : public DaemonSuite {
 protected:
  static void SetUpTestSuite() { start_daemon({}); }
};

TEST_F(GrpcDrainTest, SigtermFlipsHealthRefusesNewCallsAndFinishesInFlight) {
  v1::GenerateRequest request = text_request(kPrompt, 32);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  prepare(context, "");
  auto reader = stub_->GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  int num_tokens = 0;
  ASSERT_TRUE(reader->Read(&message));
  num_tokens += message.tokens_size();

  ::kill(daemon_->pid(), SIGTERM);
  int serving = 1;
  for (int i = 0; i < 200 && serving != 2; ++i) {
    ASSERT_TRUE(health_check(channel_, "lightserve.v1.Generation", &serving).ok());
    if (serving != 2) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(serving, 2) << "health is not NOT_SERVING while draining";
  ASSERT_TRUE(health_check(channel_, "", &serving).ok());
  EXPECT_EQ(serving, 2);
  const StreamResult refused = read_stream(*stub_, text_request(kPrompt, 2), "");
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();

  while (reader->Read(&message)) num_tokens += message.tokens_size();
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(num_tokens, 32);
  EXPECT_EQ(daemon_->stop(SIGTERM, 30), 0) << daemon_->stderr_text();
}

}  // namespace
