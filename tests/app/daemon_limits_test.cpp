// Resource limits of the real daemon that need several clients (docs/reliability.md "Resource
// limits"): connection fairness (--max-connections reclaims an idle connection of the client
// holding the most, --max-connections-per-client answers 429) and backpressure (a stream whose
// client reads slowly is held, keeping its KV, instead of being generated into memory; one whose
// client stops reading is closed after --client-timeout and its request aborted), over HTTP and
// gRPC. Clients are told apart by their loopback source address (127.0.0.N).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lightserve/v1/generation.grpc.pb.h"
#include "tests/support/daemon_process.h"
#include "tests/support/gguf_writer.h"
#include "tests/support/http_test_client.h"

namespace lightserve::testing {
namespace {

namespace v1 = ::lightserve::v1;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

const std::string kModel = model::gguf_testing::test_model_path();
const std::vector<std::pair<std::string, std::string>> kJson = {
    {"Content-Type", "application/json"}};
constexpr int kMaxConnections = 6;
constexpr int kPerClient = 4;
constexpr int kBacklog = 8;  // --max-stream-backlog
// LIGHTSERVE_TEST_TIME_SCALE (scripts/sanitize.sh sets it: a TSan daemon runs many times slower)
// stretches every wait and the client timeout alike.
double time_scale() {
  static const double scale = [] {
    const char* env = std::getenv("LIGHTSERVE_TEST_TIME_SCALE");
    const double s = env != nullptr ? std::atof(env) : 1.0;
    return s >= 1.0 ? s : 1.0;
  }();
  return scale;
}
// --client-timeout: long enough that a slow-reader test's checks (while its writes stall) finish
// well inside it on a loaded 2-vCPU machine (at 8 s they sometimes did not).
const double kClientTimeout = 15 * time_scale();
constexpr int kLongGeneration = 400;  // tokens, ~340 KB of SSE: more than the socket buffers hold

class DaemonLimits : public DaemonSuite<DaemonLimits> {
 public:
  static std::vector<std::string> daemon_args() {
    return {"--model",
            kModel,
            "--kv-budget",
            "64MiB",
            "--context",
            "1024",
            "--threads",
            "2",
            "--max-connections",
            std::to_string(kMaxConnections),
            "--max-connections-per-client",
            std::to_string(kPerClient),
            "--max-stream-backlog",
            std::to_string(kBacklog),
            "--client-timeout",
            std::to_string(kClientTimeout)};
  }

 protected:
  void SetUp() override {
    DaemonSuite::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    // Connections of the previous test may still be closing: wait until none is left over.
    ASSERT_TRUE(wait_idle(30));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }

  // /metrics from a client address of its own (127.0.0.250), so probes take no test's slots.
  static std::string metrics() {
    return HttpConnection(port(), 10, "127.0.0.250").request("GET", "/metrics").body;
  }
  static double metric(const std::string& name) {
    return metric_value(metrics(), name).value_or(-1);
  }
  // The sample of `name` whose labels include `label` (e.g. finished_reason="abort"), or 0.
  static double labelled(const std::string& name, const std::string& label) {
    std::istringstream in(metrics());
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(name + "{", 0) == 0 && line.find(label) != std::string::npos) {
        return std::strtod(line.substr(line.rfind(' ') + 1).c_str(), nullptr);
      }
    }
    return 0;
  }
  // Polls until `name` reaches `value`; false after `seconds` (times time_scale()).
  static bool wait_metric(const std::string& name, double value, double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds * time_scale());
    while (Clock::now() < deadline) {
      if (metric(name) == value) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  static std::unique_ptr<HttpConnection> keep_alive_from(const char* address) {
    auto c = std::make_unique<HttpConnection>(port(), 10, address);
    EXPECT_EQ(c->request("GET", "/health").status, 200) << "from " << address;
    return c;
  }

  // A streamed completion of kLongGeneration tokens with 20 logprobs each (about 1.5 KB a
  // chunk), sent from `address` over a socket with a 4 KiB receive buffer, and not read.
  static std::unique_ptr<HttpConnection> start_unread_stream(const char* address) {
    auto c = std::make_unique<HttpConnection>(port(), 60, address, 4096);
    const std::string body = json{{"prompt", "Count: 1, 2, 3,"},
                                  {"max_tokens", kLongGeneration},
                                  {"ignore_eos", true},
                                  {"logprobs", 20},
                                  {"stream", true},
                                  {"stream_options", {{"include_usage", true}}}}
                                 .dump();
    EXPECT_TRUE(
        c->send_raw(HttpConnection::format_request("POST", "/v1/completions", body, kJson)));
    return c;
  }

  // Once the request is held: no token is generated over `seconds`, and fewer than all were.
  static void expect_generation_paused(double seconds) {
    const double before = metric("lightserve_generation_tokens_total");
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    const double after = metric("lightserve_generation_tokens_total");
    EXPECT_EQ(after, before) << "tokens were generated for a client that reads nothing";
    EXPECT_EQ(metric("lightserve_num_requests_running"), 1.0);
    EXPECT_GT(metric("lightserve_kv_cache_usage_perc"), 0.0);  // held, not preempted
  }
};

TEST_F(DaemonLimits, AnIdleConnectionOfTheBiggestClientMakesRoomAtTheLimit) {
  std::vector<std::unique_ptr<HttpConnection>> big, small;
  for (int i = 0; i < 4; ++i) big.push_back(keep_alive_from("127.0.0.2"));
  for (int i = 0; i < 2; ++i) small.push_back(keep_alive_from("127.0.0.3"));
  // Full (6 of 6), all idle: a newcomer is served, and one of 127.0.0.2's connections goes.
  HttpConnection newcomer(port(), 10, "127.0.0.4");
  const HttpResponse r = newcomer.request("GET", "/health");
  EXPECT_EQ(r.status, 200) << r.body;
  int big_closed = 0, small_closed = 0;
  for (auto& c : big) big_closed += c->wait_closed(1.0);
  for (auto& c : small) small_closed += c->wait_closed(0.2);
  EXPECT_EQ(big_closed, 1);
  EXPECT_EQ(small_closed, 0);
  // The survivors still serve on their connections.
  for (auto& c : small) EXPECT_EQ(c->request("GET", "/health").status, 200);
}

TEST_F(DaemonLimits, ConnectionsOverTheLimitGet503WhenNoneIsIdle) {
  // Six connections that have each sent part of a request: busy, never reclaimed.
  std::vector<std::unique_ptr<HttpConnection>> busy;
  for (int i = 0; i < kMaxConnections; ++i) {
    busy.push_back(std::make_unique<HttpConnection>(port(), 10, i < 3 ? "127.0.0.5" : "127.0.0.6"));
    ASSERT_TRUE(busy.back()->send_raw("GET /health HTTP/1.1\r\n"));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the server sees their bytes
  HttpConnection extra(port(), 10, "127.0.0.7");
  const HttpResponse r = extra.request("GET", "/health");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("too many open connections (the limit is 6)"), std::string::npos) << r.body;
  EXPECT_TRUE(extra.wait_closed(5));
  // The partial requests complete and are answered.
  for (auto& c : busy) {
    ASSERT_TRUE(c->send_raw("Host: x\r\n\r\n"));
    EXPECT_EQ(c->read_response().status, 200);
  }
}

TEST_F(DaemonLimits, OneClientOverItsShareGets429AndOthersAreServed) {
  std::vector<std::unique_ptr<HttpConnection>> mine;
  for (int i = 0; i < kPerClient; ++i) mine.push_back(keep_alive_from("127.0.0.8"));
  HttpConnection over(port(), 10, "127.0.0.8");
  const HttpResponse r = over.request("GET", "/health");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("retry-after"), "1");
  EXPECT_NE(r.body.find("too many open connections from 127.0.0.8 (the limit is 4 per client)"),
            std::string::npos)
      << r.body;
  HttpConnection other(port(), 10, "127.0.0.9");
  EXPECT_EQ(other.request("GET", "/health").status, 200);
  for (auto& c : mine) EXPECT_EQ(c->request("GET", "/health").status, 200);
}

TEST_F(DaemonLimits, ASlowHttpReaderIsHeldThenGetsEveryToken) {
  const double tokens_before = metric("lightserve_generation_tokens_total");
  auto c = start_unread_stream("127.0.0.10");
  ASSERT_TRUE(wait_metric("lightserve_num_requests_held", 1, 60)) << metrics();
  expect_generation_paused(1.0);
  const double generated = metric("lightserve_generation_tokens_total") - tokens_before;
  std::printf("[limits] HTTP: held after %.0f of %d tokens\n", generated, kLongGeneration);
  EXPECT_LT(generated, kLongGeneration);

  // Now read it all: the stream resumes and is whole.
  const HttpResponse r = c->read_response();
  ASSERT_EQ(r.status, 200);
  bool framing_ok = false;
  const std::vector<std::string> events = sse_data(r.body, &framing_ok);
  EXPECT_TRUE(framing_ok);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json usage = json::parse(events[events.size() - 2])["usage"];
  EXPECT_EQ(usage["completion_tokens"], kLongGeneration) << usage.dump();
  EXPECT_TRUE(wait_metric("lightserve_num_requests_held", 0, 5));
  EXPECT_TRUE(wait_idle(5));
}

TEST_F(DaemonLimits, AnHttpClientThatStopsReadingIsClosedAndItsRequestAborted) {
  const std::string kAbort = "finished_reason=\"abort\"";
  const double aborted_before = labelled("lightserve_request_success_total", kAbort);
  const auto sent_at = Clock::now();
  auto c = start_unread_stream("127.0.0.11");
  ASSERT_TRUE(wait_metric("lightserve_num_requests_held", 1, 60)) << metrics();
  // The stalled write times out after --client-timeout: the connection closes, the request
  // aborts and gives its KV back.
  EXPECT_TRUE(wait_idle(kClientTimeout + 20)) << metrics();
  EXPECT_GE(std::chrono::duration<double>(Clock::now() - sent_at).count(), kClientTimeout);
  EXPECT_EQ(metric("lightserve_num_requests_held"), 0.0);
  EXPECT_EQ(labelled("lightserve_request_success_total", kAbort), aborted_before + 1);
  EXPECT_TRUE(c->wait_closed(5));
}

TEST_F(DaemonLimits, ASlowGrpcReaderIsHeldThenGetsEveryToken) {
  // A client whose stream window stays small (no BDP probing growing it): what it does not read
  // stays with the server, as over a slow link.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 * 1024);
  auto channel =
      grpc::CreateCustomChannel(daemon_->grpc_target(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Generation::NewStub(channel);
  v1::GenerateRequest request;
  request.set_text("Count: 1, 2, 3,");
  request.set_max_tokens(kLongGeneration);
  request.set_ignore_eos(true);
  request.set_logprobs(20);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  auto reader = stub->GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  const double tokens_before = metric("lightserve_generation_tokens_total");
  ASSERT_TRUE(reader->Read(&message));  // the call runs; now read nothing for a while
  ASSERT_TRUE(wait_metric("lightserve_num_requests_held", 1, 60)) << metrics();
  expect_generation_paused(1.0);
  const double generated = metric("lightserve_generation_tokens_total") - tokens_before;
  std::printf("[limits] gRPC: held after %.0f of %d tokens\n", generated, kLongGeneration);
  EXPECT_LT(generated, kLongGeneration);

  int tokens = message.tokens_size();
  int completion_tokens = message.has_finish() ? message.finish().usage().completion_tokens() : 0;
  while (reader->Read(&message)) {
    tokens += message.tokens_size();
    if (message.has_finish()) completion_tokens = message.finish().usage().completion_tokens();
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(completion_tokens, kLongGeneration);
  EXPECT_EQ(tokens, kLongGeneration);
  EXPECT_TRUE(wait_idle(5));
}

}  // namespace
}  // namespace lightserve::testing
