// A soak of the real daemon (docs/reliability.md): many requests over HTTP and gRPC at once,
// mixed lengths, some cancelled at random points. Afterwards nothing runs or waits, no KV is
// held, the server's finish counters add up to what the clients saw, and resident memory is flat
// between the second and the last quarter of the run.
//
// LIGHTSERVE_SOAK_REQUESTS (default 400, about a minute on 2 vCPUs) and LIGHTSERVE_SOAK_CONCURRENCY
// (default 32) size it; `LIGHTSERVE_SOAK_REQUESTS=10000 build/tests/app_tests
// --gtest_filter='DaemonSoak.*'` is the long run of docs/reliability.md (not through ctest, whose
// 900 s per-test timeout it outlasts). It prints a table for that page.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
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

const std::string kModel = model::gguf_testing::test_model_path();

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

int64_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

// Sum of a counter over its labels (name{...} value lines).
double metric_sum(const std::string& text, const std::string& name) {
  double sum = 0;
  size_t pos = 0;
  while ((pos = text.find("\n" + name + "{", pos)) != std::string::npos) {
    const size_t end = text.find('\n', pos + 1);
    const std::string line = text.substr(pos + 1, end - pos - 1);
    sum += std::strtod(line.substr(line.rfind(' ') + 1).c_str(), nullptr);
    pos = end;
  }
  return sum;
}

struct Outcome {
  enum Kind { kCompleted, kCancelled, kRefused, kFailed } kind = kFailed;
  std::string detail;
};

struct Plan {
  bool grpc = false;
  bool stream = false;
  int prompt_words = 1;
  int max_tokens = 1;
  int cancel_after = -1;  // chunks (HTTP) or messages (gRPC) read before cancelling; -1: never
};

Plan plan_for(int index, uint64_t seed) {
  std::mt19937_64 rng(seed + static_cast<uint64_t>(index));
  Plan p;
  p.grpc = index % 2 == 1;
  p.prompt_words = std::array{2, 6, 20, 60, 150}[rng() % 5];
  p.max_tokens = 1 + static_cast<int>(rng() % 24);
  p.stream = rng() % 3 != 0;
  if (rng() % 10 < 3) {
    p.stream = true;
    p.cancel_after = static_cast<int>(rng() % static_cast<uint64_t>(p.max_tokens));
  }
  return p;
}

std::string prompt_of(int words) {
  std::string s = "Once";
  for (int i = 1; i < words; ++i) s += i % 7 == 0 ? " and then" : " upon";
  return s;
}

Outcome run_http(int port, const Plan& p) {
  const std::string body = nlohmann::json{
      {"prompt", prompt_of(p.prompt_words)},
      {"max_tokens", p.max_tokens},
      {"temperature", 0.7},
      {"ignore_eos", true},
      {"stream", p.stream}}.dump();
  HttpConnection c(port, 300);
  const std::vector<std::pair<std::string, std::string>> json = {
      {"Content-Type", "application/json"}};
  if (!p.stream) {
    const HttpResponse r = c.request("POST", "/v1/completions", body, json);
    if (r.status == 200) return {Outcome::kCompleted, ""};
    if (r.status == 429 || r.status == 503) return {Outcome::kRefused, ""};
    return {Outcome::kFailed, std::to_string(r.status) + " " + r.body};
  }
  if (!c.send_raw(HttpConnection::format_request("POST", "/v1/completions", body, json))) {
    return {Outcome::kFailed, "send"};
  }
  std::optional<HttpResponse> head = c.read_head();
  if (!head) return {Outcome::kFailed, "no response head"};
  if (head->status == 429 || head->status == 503) return {Outcome::kRefused, ""};
  if (head->status != 200) return {Outcome::kFailed, std::to_string(head->status)};
  int chunks = 0;
  std::string all;
  while (true) {
    if (p.cancel_after >= 0 && chunks >= p.cancel_after) {
      c.close();  // the client goes away mid-stream
      return {Outcome::kCancelled, ""};
    }
    std::optional<std::string> chunk = c.read_chunk();
    if (!chunk) return {Outcome::kFailed, "stream cut"};
    if (chunk->empty()) break;
    all += *chunk;
    ++chunks;
  }
  if (all.find("data: [DONE]") == std::string::npos) return {Outcome::kFailed, "no [DONE]"};
  return {Outcome::kCompleted, ""};
}

Outcome run_grpc(v1::Generation::Stub& stub, const Plan& p) {
  v1::GenerateRequest request;
  request.set_text(prompt_of(p.prompt_words));
  request.set_max_tokens(p.max_tokens);
  request.set_temperature(0.7f);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  const auto refused = [](const grpc::Status& s) {
    return s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
           s.error_code() == grpc::StatusCode::UNAVAILABLE;
  };
  if (!p.stream) {
    v1::GenerateResponse response;
    const grpc::Status s = stub.Generate(&context, request, &response);
    if (s.ok() && response.has_finish()) return {Outcome::kCompleted, ""};
    if (refused(s)) return {Outcome::kRefused, ""};
    return {Outcome::kFailed, s.error_message()};
  }
  auto reader = stub.GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  int messages = 0;
  bool finished = false;
  while (true) {
    if (p.cancel_after >= 0 && messages >= p.cancel_after) {
      context.TryCancel();
      while (reader->Read(&message)) {
      }
      (void)reader->Finish();
      return {Outcome::kCancelled, ""};
    }
    if (!reader->Read(&message)) break;
    ++messages;
    finished = finished || message.has_finish();
  }
  const grpc::Status s = reader->Finish();
  if (s.ok() && finished) return {Outcome::kCompleted, ""};
  if (refused(s)) return {Outcome::kRefused, ""};
  return {Outcome::kFailed, s.error_message()};
}

TEST(DaemonSoak, ManyMixedAndCancelledRequestsLeaveNothingBehind) {
  if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "no model at " << kModel;
  const int num_requests = env_int("LIGHTSERVE_SOAK_REQUESTS", 400);
  const int concurrency = env_int("LIGHTSERVE_SOAK_CONCURRENCY", 32);
  const uint64_t seed = static_cast<uint64_t>(env_int("LIGHTSERVE_SOAK_SEED", 7));
  DaemonProcess d = DaemonProcess::start({"--model", kModel, "--kv-budget", "256MiB", "--context",
                                          "512", "--sink", "4", "--window", "124", "--max-running",
                                          std::to_string(concurrency), "--max-waiting", "1024",
                                          "--threads", "2"});
  ASSERT_TRUE(d.ok()) << d.error();
  const int port = d.http_port();
  auto channel = grpc::CreateChannel(d.grpc_target(), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);

  std::atomic<int> next{0}, done{0};
  std::array<std::atomic<int>, 4> counts{};
  std::atomic<int> cancelled_unseen{0};  // gRPC calls cancelled before any reply: maybe unseen
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  std::array<int64_t, 5> rss{};  // start, 1/4, 1/2, 3/4, end
  std::array<double, 3> kv{};    // start, middle, end
  const auto kv_now = [&] {
    return metric_value(HttpConnection(port, 30).request("GET", "/metrics").body,
                        "lightserve_kv_cache_usage_perc")
        .value_or(-1);
  };
  rss[0] = rss_kib(d.pid());
  kv[0] = kv_now();
  const auto start = Clock::now();
  std::thread monitor([&] {
    int quarter = 1;
    while (quarter < 4) {
      if (done.load() >= num_requests * quarter / 4) {
        rss[quarter] = rss_kib(d.pid());
        if (quarter == 2) kv[1] = kv_now();
        ++quarter;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      for (int i = next.fetch_add(1); i < num_requests; i = next.fetch_add(1)) {
        const Plan p = plan_for(i, seed);
        const Outcome o = p.grpc ? run_grpc(*stub, p) : run_http(port, p);
        counts[o.kind].fetch_add(1);
        if (o.kind == Outcome::kCancelled && p.grpc && p.cancel_after == 0) {
          cancelled_unseen.fetch_add(1);
        }
        if (o.kind == Outcome::kFailed) {
          const std::lock_guard lock(failures_mutex);
          failures.push_back("request " + std::to_string(i) + ": " + o.detail);
        }
        done.fetch_add(1);
      }
    });
  }
  for (std::thread& t : workers) t.join();
  monitor.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  // Let the engine see the last cancellations, then read the end state.
  std::string metrics;
  for (int i = 0; i < 200; ++i) {
    metrics = HttpConnection(port, 30).request("GET", "/metrics").body;
    if (metric_value(metrics, "lightserve_num_requests_running") == 0.0 &&
        metric_value(metrics, "lightserve_num_requests_waiting") == 0.0 &&
        metric_value(metrics, "lightserve_kv_cache_usage_perc") == 0.0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  rss[4] = rss_kib(d.pid());
  kv[2] = metric_value(metrics, "lightserve_kv_cache_usage_perc").value_or(-1);
  const double finished = metric_sum(metrics, "lightserve_request_success_total");
  const double stop_or_length = metric_sum(metrics, "lightserve_request_success_total") - [&] {
    double other = 0;
    for (const char* r : {"abort", "error"}) {
      const std::string key = "lightserve_request_success_total{";
      size_t pos = metrics.find(key);
      while (pos != std::string::npos) {
        const size_t end = metrics.find('\n', pos);
        const std::string line = metrics.substr(pos, end - pos);
        if (line.find(std::string("finished_reason=\"") + r + "\"") != std::string::npos) {
          other += std::strtod(line.substr(line.rfind(' ') + 1).c_str(), nullptr);
        }
        pos = metrics.find(key, end);
      }
    }
    return other;
  }();

  const int completed = counts[Outcome::kCompleted], cancelled = counts[Outcome::kCancelled],
            refused = counts[Outcome::kRefused], failed = counts[Outcome::kFailed];
  std::printf(
      "\nsoak: %d requests (HTTP and gRPC alternating), concurrency %d, %.1f s\n"
      "| completed | cancelled (gRPC before a reply) | refused | failed | server finished | server "
      "stop+length |\n"
      "| %d | %d (%d) | %d | %d | %.0f | %.0f |\n"
      "| RSS KiB: start | 1/4 | 1/2 | 3/4 | end | KV usage: start | middle | end |\n"
      "| %lld | %lld | %lld | %lld | %lld | %.3f | %.3f | %.3f |\n",
      num_requests, concurrency, seconds, completed, cancelled, cancelled_unseen.load(), refused,
      failed, finished, stop_or_length, static_cast<long long>(rss[0]),
      static_cast<long long>(rss[1]), static_cast<long long>(rss[2]),
      static_cast<long long>(rss[3]), static_cast<long long>(rss[4]), kv[0], kv[1], kv[2]);

  EXPECT_EQ(failed, 0) << (failures.empty() ? "" : failures.front());
  EXPECT_EQ(completed + cancelled + refused + failed, num_requests);
  EXPECT_EQ(metric_value(metrics, "lightserve_num_requests_running"), 0.0);
  EXPECT_EQ(metric_value(metrics, "lightserve_num_requests_waiting"), 0.0);
  EXPECT_EQ(kv[2], 0.0);
  // Every request the server accepted finished exactly once there: all the completed and
  // cancelled ones, except gRPC calls cancelled before their first reply, which the server may
  // never have seen. The clients saw every finish of a request they did not cancel (a cancelled
  // one may still have finished first).
  EXPECT_LE(finished, completed + cancelled);
  EXPECT_GE(finished, completed + cancelled - cancelled_unseen.load());
  EXPECT_GE(stop_or_length, completed);
  EXPECT_LE(stop_or_length, completed + cancelled);
  // Flat memory: the last quarter within 5% of the second.
  ASSERT_GT(rss[2], 0);
  EXPECT_LE(std::abs(static_cast<double>(rss[4] - rss[2])) / static_cast<double>(rss[2]), 0.05)
      << "RSS " << rss[2] << " KiB at 1/2, " << rss[4] << " KiB at the end";
  EXPECT_EQ(d.stop(SIGTERM, 120), 0) << d.stderr_text();
}

}  // namespace
}  // namespace lightserve::testing
