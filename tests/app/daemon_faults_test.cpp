// Faults injected at the executor boundary of the real daemon (LIGHTSERVE_FAULT_INJECTION,
// executor/fault_injection.h): the requests of a failed step finish with an internal error, the
// others go on, no KV is left behind, and /health and gRPC health tell the truth: a transient
// fault keeps the daemon healthy, a device that keeps failing turns both NOT_SERVING.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/daemon_process.h"
#include "tests/support/gguf_writer.h"
#include "tests/support/grpc_raw.h"
#include "tests/support/http_test_client.h"

namespace lightserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kModel = model::gguf_testing::test_model_path();
const std::vector<std::pair<std::string, std::string>> kJson = {
    {"Content-Type", "application/json"}};

HttpResponse complete(int port, int max_tokens) {
  const std::string body = nlohmann::json{
      {"prompt", "The quick brown fox"},
      {"max_tokens", max_tokens},
      {"temperature", 0},
      {"ignore_eos", true}}.dump();
  return HttpConnection(port, 120).request("POST", "/v1/completions", body, kJson);
}

DaemonProcess start_with_faults(const std::string& plan, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"--model",   kModel, "--kv-budget", "64MiB",
                                   "--context", "512",  "--threads",   "2"};
  args.insert(args.end(), more.begin(), more.end());
  return DaemonProcess::start(args, 120, {"LIGHTSERVE_FAULT_INJECTION=" + plan});
}

// Nothing running or waiting and no KV held, per /metrics (the engine publishes after a step).
void expect_idle_and_no_kv(int port) {
  std::optional<double> running, waiting, kv;
  for (int i = 0; i < 100; ++i) {
    const std::string text = HttpConnection(port, 10).request("GET", "/metrics").body;
    running = metric_value(text, "lightserve_num_requests_running");
    waiting = metric_value(text, "lightserve_num_requests_waiting");
    kv = metric_value(text, "lightserve_kv_cache_usage_perc");
    if (running == 0.0 && waiting == 0.0 && kv == 0.0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "running " << running.value_or(-1) << ", waiting " << waiting.value_or(-1)
                << ", kv " << kv.value_or(-1);
}

int grpc_health(const DaemonProcess& d) {
  int serving = 0;
  const auto channel = grpc::CreateChannel(d.grpc_target(), grpc::InsecureChannelCredentials());
  (void)health_check(channel, "", &serving);
  return serving;
}

class DaemonFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "no model at " << kModel;
  }
};

TEST_F(DaemonFaultsTest, AFailedStepFailsItsRequestsOnlyAndTheDaemonServesOn) {
  // One request runs at a time, so the step numbers are its own: the first request dies at step
  // 3 (an exception from the device), the second at step 5 (an allocation that fails).
  DaemonProcess d = start_with_faults("throw@3,bad_alloc@5", {"--max-running", "1"});
  ASSERT_TRUE(d.ok()) << d.error();
  EXPECT_NE(d.stderr_text().find("fault injection active"), std::string::npos);
  const int port = d.http_port();

  const HttpResponse first = complete(port, 8);
  EXPECT_EQ(first.status, 500) << first.body;
  EXPECT_NE(first.body.find("injected fault at step 3"), std::string::npos) << first.body;
  const HttpResponse second = complete(port, 8);
  EXPECT_EQ(second.status, 500) << second.body;
  EXPECT_EQ(HttpConnection(port, 10).request("GET", "/health").status, 200);

  // Two at once with one running: the one waiting was in no failed step and completes.
  HttpResponse a, b;
  std::thread ta([&] { a = complete(port, 8); });
  std::thread tb([&] { b = complete(port, 8); });
  ta.join();
  tb.join();
  EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(a.json()["usage"]["completion_tokens"], 8);
  EXPECT_EQ(HttpConnection(port, 10).request("GET", "/health").status, 200);
  EXPECT_EQ(grpc_health(d), 1);  // SERVING
  expect_idle_and_no_kv(port);
  EXPECT_EQ(d.stop(SIGTERM, 60), 0) << d.stderr_text();
}

TEST_F(DaemonFaultsTest, ADeviceThatKeepsFailingTurnsHealthNotServing) {
  DaemonProcess d = start_with_faults("error@2x1000000");
  ASSERT_TRUE(d.ok()) << d.error();
  const int port = d.http_port();
  EXPECT_EQ(grpc_health(d), 1);
  int health = 200;
  for (int i = 0; i < 6 && health == 200; ++i) {
    const HttpResponse r = complete(port, 4);
    EXPECT_TRUE(r.status == 500 || r.status == 503) << r.status << " " << r.body;
    health = HttpConnection(port, 10).request("GET", "/health").status;
  }
  EXPECT_EQ(health, 503);
  EXPECT_EQ(HttpConnection(port, 10).request("GET", "/ready").status, 503);
  const HttpResponse refused = complete(port, 4);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("the engine has failed"), std::string::npos) << refused.body;
  int serving = 1;  // the daemon's watch loop flips gRPC health within a fraction of a second
  for (int i = 0; i < 100 && serving != 2; ++i) {
    serving = grpc_health(d);
    if (serving != 2) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(serving, 2);  // NOT_SERVING
  EXPECT_NE(d.stderr_text().find("the engine has failed"), std::string::npos) << d.stderr_text();
  expect_idle_and_no_kv(port);
  EXPECT_EQ(d.stop(SIGTERM, 60), 0) << d.stderr_text();
}

TEST_F(DaemonFaultsTest, ASlowStepDelaysItsRequestButNotTheProbes) {
  DaemonProcess d = start_with_faults("slow@2:2000");
  ASSERT_TRUE(d.ok()) << d.error();
  const int port = d.http_port();
  HttpResponse slow;
  const auto start = Clock::now();
  std::thread t([&] { slow = complete(port, 6); });
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // inside the slow step
  const auto probe = Clock::now();
  EXPECT_EQ(HttpConnection(port, 10).request("GET", "/health").status, 200);
  EXPECT_LT(Clock::now() - probe, std::chrono::milliseconds(500));
  t.join();
  EXPECT_EQ(slow.status, 200) << slow.body;
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(2000));
  expect_idle_and_no_kv(port);
  EXPECT_EQ(d.stop(SIGTERM, 60), 0) << d.stderr_text();
}

TEST_F(DaemonFaultsTest, ABadPlanIsAUsageError) {
  const CliResult r = [] {
    setenv("LIGHTSERVE_FAULT_INJECTION", "melt@3", 1);
    CliResult out = run_lightserve("serve --model " + kModel + " --http-port 0 --grpc-port 0");
    unsetenv("LIGHTSERVE_FAULT_INJECTION");
    return out;
  }();
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("LIGHTSERVE_FAULT_INJECTION: fault 'melt@3': unknown kind"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace lightserve::testing
