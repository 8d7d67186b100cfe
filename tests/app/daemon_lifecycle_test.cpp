// The real daemon's lifecycle over HTTP (issue: serving daemon): SIGTERM during streaming requests
// (every stream completes, /ready turns 503, new requests get 503, exit code 0), and overload (more
// requests than the queue holds: the surplus get 429 at once, the rest complete).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/daemon_process.h"
#include "tests/support/gguf_writer.h"
#include "tests/support/http_test_client.h"

namespace lightserve::testing {
namespace {

const std::string kModel = model::gguf_testing::test_model_path();

std::string completion_body(int max_tokens, bool stream) {
  return nlohmann::json{{"prompt", "Once upon a time, in a land far away,"},
                        {"max_tokens", max_tokens},
                        {"temperature", 0},
                        {"ignore_eos", true},
                        {"stream", stream}}
      .dump();
}

const std::vector<std::pair<std::string, std::string>> kJson = {
    {"Content-Type", "application/json"}};

// A streamed completion read on its own thread: the status, and whether the SSE stream ended with
// [DONE] after `max_tokens` text chunks.
struct StreamResult {
  int status = 0;
  int num_chunks = 0;
  bool done = false;
  std::string finish_reason;
};

StreamResult stream_completion(int port, int max_tokens, std::atomic<int>* started) {
  StreamResult out;
  HttpConnection c(port, 120);
  if (!c.send_raw(HttpConnection::format_request("POST", "/v1/completions",
                                                 completion_body(max_tokens, true), kJson))) {
    return out;
  }
  std::optional<HttpResponse> head = c.read_head();
  if (!head) return out;
  out.status = head->status;
  if (out.status != 200) return out;
  std::string body;
  bool counted = false;
  while (true) {
    std::optional<std::string> chunk = c.read_chunk();
    if (!chunk || chunk->empty()) break;
    body += *chunk;
    if (!counted && body.find("data: ") != std::string::npos) {
      counted = true;
      started->fetch_add(1);
    }
  }
  for (const std::string& data : sse_data(body)) {
    if (data == "[DONE]") {
      out.done = true;
      continue;
    }
    const nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
    if (j.is_discarded() || !j.contains("choices") || j["choices"].empty()) continue;
    ++out.num_chunks;
    const nlohmann::json& fr = j["choices"][0]["finish_reason"];
    if (fr.is_string()) out.finish_reason = fr.get<std::string>();
  }
  return out;
}

class DaemonLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "no model at " << kModel;
  }
};

TEST_F(DaemonLifecycleTest, SigtermDrainsStreamsRefusesNewRequestsAndExitsZero) {
  DaemonProcess d =
      DaemonProcess::start({"--model", kModel, "--kv-budget", "64MiB", "--context", "512",
                            "--grpc-port", "-1", "--drain-timeout", "60", "--threads", "2"});
  ASSERT_TRUE(d.ok()) << d.error();
  const int port = d.http_port();
  const int kStreams = 3, kTokens = 48;
  std::atomic<int> started{0};
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = stream_completion(port, kTokens, &started); });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (started.load() < kStreams && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(started.load(), kStreams) << d.stderr_text();
  ASSERT_EQ(::kill(d.pid(), SIGTERM), 0);

  // Draining: not ready, and a new request is refused with 503 (poll: the signal is async).
  int ready_status = 0;
  for (int i = 0; i < 200 && ready_status != 503; ++i) {
    ready_status = HttpConnection(port, 5).request("GET", "/ready").status;
    if (ready_status != 503) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(ready_status, 503);
  const HttpResponse refused =
      HttpConnection(port, 10).request("POST", "/v1/completions", completion_body(4, false), kJson);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("shutting down"), std::string::npos) << refused.body;

  for (std::thread& t : threads) t.join();
  for (const StreamResult& r : results) {
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(r.done) << "stream did not end with [DONE]";
    EXPECT_EQ(r.finish_reason, "length");  // ran to max_tokens: not aborted by the drain
  }
  EXPECT_EQ(d.stop(SIGTERM, 60), 0) << d.stderr_text();
  EXPECT_NE(d.stderr_text().find("draining"), std::string::npos);
}

TEST_F(DaemonLifecycleTest, DrainTimeoutAbortsWhatIsLeftAndStillExitsZero) {
  DaemonProcess d =
      DaemonProcess::start({"--model", kModel, "--kv-budget", "64MiB", "--context", "512",
                            "--grpc-port", "-1", "--drain-timeout", "0.2", "--threads", "2"});
  ASSERT_TRUE(d.ok()) << d.error();
  std::atomic<int> started{0};
  StreamResult result;
  std::thread t([&] { result = stream_completion(d.http_port(), 400, &started); });
  while (started.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(d.stop(SIGTERM, 60), 0) << d.stderr_text();
  t.join();
  EXPECT_EQ(result.status, 200);
  EXPECT_LT(result.num_chunks, 400);  // cut short
  EXPECT_NE(d.stderr_text().find("aborting 1 request"), std::string::npos) << d.stderr_text();
}

TEST_F(DaemonLifecycleTest, OverloadGets429AtOnceAndTheRestComplete) {
  // One request runs at a time and two may wait; the others are refused at once.
  DaemonProcess d = DaemonProcess::start({"--model", kModel, "--kv-budget", "64MiB", "--context",
                                          "512", "--grpc-port", "-1", "--max-running", "1",
                                          "--max-waiting", "2", "--threads", "2"});
  ASSERT_TRUE(d.ok()) << d.error();
  const int kRequests = 8;
  std::vector<int> statuses(kRequests, 0);
  std::vector<double> seconds(kRequests, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      const auto t0 = std::chrono::steady_clock::now();
      const HttpResponse r =
          HttpConnection(d.http_port(), 120)
              .request("POST", "/v1/completions", completion_body(24, false), kJson);
      statuses[i] = r.status;
      seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r.status == 429) {
        EXPECT_NE(r.body.find("queue is full"), std::string::npos) << r.body;
        EXPECT_EQ(r.header("retry-after"), "1");
      }
    });
  }
  for (std::thread& t : threads) t.join();
  int ok = 0, refused = 0;
  double slowest_ok = 0, slowest_refusal = 0;
  for (int i = 0; i < kRequests; ++i) {
    if (statuses[i] == 200) {
      ++ok;
      slowest_ok = std::max(slowest_ok, seconds[i]);
    } else {
      EXPECT_EQ(statuses[i], 429);
      ++refused;
      slowest_refusal = std::max(slowest_refusal, seconds[i]);
    }
  }
  // At least the queue's two (adds count against the queue until the engine admits them, so a
  // burst can find the running slot still empty); more when some were admitted in between.
  EXPECT_GE(ok, 2);
  EXPECT_GE(refused, 1);
  EXPECT_EQ(ok + refused, kRequests);
  if (refused > 0) {
    EXPECT_LT(slowest_refusal, slowest_ok);  // refused at once, not after waiting
  }
  const HttpResponse metrics = HttpConnection(d.http_port(), 10).request("GET", "/metrics");
  EXPECT_EQ(metric_value(metrics.body, "lightserve_admission_rejections_total"),
            static_cast<double>(refused));
  EXPECT_EQ(d.stop(SIGTERM), 0);
}

}  // namespace
}  // namespace lightserve::testing
