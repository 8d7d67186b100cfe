// lightserve-loadtest against the real daemon (a child process, small loads): both protocols,
// the counts it reports against the server's own /metrics counters, and the failure paths (no
// server, not an OpenAI server, a server killed mid-run).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "loadtest/dataset.h"
#include "loadtest/http_client.h"
#include "loadtest/metrics_scraper.h"
#include "loadtest/report.h"
#include "loadtest/sweep.h"
#include "tests/support/cli_runner.h"
#include "tests/support/http_test_client.h"

namespace lightserve::testing {
namespace {

using json = nlohmann::json;
namespace lt = loadtest;

const std::string kLoadtestBinary = LIGHTSERVE_BINARY_DIR "/lightserve-loadtest";

struct ToolRun {
  int code = -1;
  std::string out;
  std::string err;
  json report;  // the --json document (null when none was written)
};

// `lightserve-loadtest ARGS --json F`, stdout and stderr captured.
ToolRun run_loadtest(const std::string& args) {
  namespace fs = std::filesystem;
  static int num_runs = 0;
  const std::string json_path =
      (fs::temp_directory_path() / ("lightserve_loadtest_" + std::to_string(::getpid()) + "_" +
                                    std::to_string(num_runs++) + ".json"))
          .string();
  std::string command = kLoadtestBinary;
  command.append(" ").append(args).append(" --json ").append(json_path);
  const CliResult run = run_command(command);
  ToolRun r{run.code, run.out, run.err, json()};
  std::ifstream report(json_path);
  if (report) r.report = json::parse(report, nullptr, false);
  fs::remove(json_path);
  return r;
}

// The sum over label sets of each counter the comparison needs.
std::map<std::string, double> server_counters(int http_port) {
  HttpConnection c(http_port);
  const std::string text = c.request("GET", "/metrics").body;
  return lt::parse_prometheus(
      text, {"lightserve_request_success_total", "lightserve_generation_tokens_total",
             "lightserve_prompt_tokens_total"});
}

// How much counter `name` grew from `before` to `after` (absent before: from 0).
double counter_delta(const std::map<std::string, double>& before,
                     const std::map<std::string, double>& after, const std::string& name) {
  const auto it = before.find(name);
  return after.at(name) - (it == before.end() ? 0.0 : it->second);
}

std::string url_of(int port) {
  std::string url = "http://127.0.0.1:";
  url.append(std::to_string(port));
  return url;
}

// A port with nothing listening: bound once to get a free number, then closed.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Every record is consistent: succeeded, TTFT <= E2E, the asked tokens, server-side counts.
void expect_sane_records(const json& report, int output_len) {
  for (const json& r : report["requests"]) {
    EXPECT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_GE(r["ttft_s"].get<double>(), 0.0);
    EXPECT_LE(r["ttft_s"].get<double>(), r["e2e_s"].get<double>());
    EXPECT_EQ(r["output_tokens"].get<int>(), output_len) << r.dump();
    EXPECT_TRUE(r["output_tokens_from_server"].get<bool>());
    EXPECT_TRUE(r["prompt_tokens_from_server"].get<bool>());
    EXPECT_LE(r["itl_s"].size(), static_cast<size_t>(output_len - 1));
  }
  const json& s = report["summary"];
  EXPECT_LE(s["ttft"]["median_ms"].get<double>(), s["e2el"]["median_ms"].get<double>());
  EXPECT_GT(s["output_throughput"].get<double>(), 0.0);
}

class LoadtestDaemon : public DaemonSuite<LoadtestDaemon> {
 public:
  static std::vector<std::string> daemon_args() {
    return {"--model", LIGHTSERVE_TEST_MODEL, "--kv-budget", "64MiB", "--context", "512"};
  }

 protected:
  // Runs `args` and checks the client's counts against the server counters' deltas (which also
  // count the `num_warmup` warm-up requests the summary leaves out).
  json run_and_compare(const std::string& args, int num_requests, int output_len,
                       int num_warmup = 0) {
    EXPECT_TRUE(wait_idle(30));
    const auto before = server_counters(port());
    const ToolRun run = run_loadtest(args);
    EXPECT_EQ(run.code, 0) << run.out << run.err;
    EXPECT_NE(run.out.find("Serving Benchmark Result"), std::string::npos) << run.out;
    if (!run.report.is_object()) {
      ADD_FAILURE() << "no JSON report; stderr: " << run.err;
      return json();
    }
    EXPECT_TRUE(wait_idle(30));
    const auto after = server_counters(port());
    const json& s = run.report["summary"];
    EXPECT_EQ(s["num_completed"].get<int>(), num_requests);
    EXPECT_EQ(s["num_failed"].get<int>(), 0);
    EXPECT_EQ(s["total_output_tokens"].get<int64_t>(), int64_t{num_requests} * output_len);
    const auto delta = [&](const std::string& name) { return counter_delta(before, after, name); };
    double prompt_tokens = 0, output_tokens = 0;
    int num_warmup_records = 0;
    for (const json& r : run.report["requests"]) {
      prompt_tokens += r["prompt_tokens"].get<double>();
      output_tokens += r["output_tokens"].get<double>();
      num_warmup_records += r["warmup"].get<bool>() ? 1 : 0;
    }
    EXPECT_EQ(num_warmup_records, num_warmup);
    EXPECT_EQ(delta("lightserve_request_success_total"), num_requests + num_warmup);
    EXPECT_EQ(delta("lightserve_generation_tokens_total"), output_tokens);
    EXPECT_EQ(delta("lightserve_prompt_tokens_total"), prompt_tokens);
    EXPECT_EQ(run.report["requests"].size(), static_cast<size_t>(num_requests + num_warmup));
    expect_sane_records(run.report, output_len);
    return run.report;
  }
};

TEST_F(LoadtestDaemon, HttpCompletionsClosedLoopCountsAddUpWithServerMetrics) {
  const json report = run_and_compare(
      "--url " + url_of(port()) +
          " --num-requests 12 --concurrency 4 --input-len 48 --output-len 12 --seed 1 -q"
          " --metrics-interval 0.2",
      12, 12);
  ASSERT_TRUE(report.is_object());
  EXPECT_EQ(report["summary"]["peak_concurrency"].get<int>(), 4);
  // The tool's own before/after scrape agrees too, and the gauges were sampled.
  EXPECT_EQ(report["summary"]["server_counter_deltas"]["lightserve_request_success_total"], 12.0);
  EXPECT_GE(report["metrics"]["series"].size(), 1u);
  EXPECT_TRUE(report["metrics"]["series"][0]["values"].contains("lightserve_kv_cache_usage_perc"));
  // Prompt words are one token each on this vocabulary: the server counts what was asked.
  EXPECT_EQ(report["summary"]["total_input_tokens"].get<int>(), 12 * 48);
}

TEST_F(LoadtestDaemon, HttpChatOpenLoopWithWarmup) {
  const json report = run_and_compare(
      "--url " + url_of(port()) +
          " --endpoint chat --request-rate 20 --max-concurrency 3 --num-requests 8 --warmup 2"
          " --input-len 32 --output-len 8 --goodput e2el:60000 -q",
      8, 8, /*num_warmup=*/2);
  ASSERT_TRUE(report.is_object());
  EXPECT_LE(report["summary"]["peak_concurrency"].get<int>(), 3);
  EXPECT_EQ(report["summary"]["num_good"].get<int>(), 8);
}

TEST_F(LoadtestDaemon, GrpcStreamCountsAddUpWithServerMetrics) {
  const json report = run_and_compare("--protocol grpc --grpc-target " + daemon_->grpc_target() +
                                          " --url " + url_of(port()) +
                                          " --num-requests 10 --concurrency 5 --input-len 40"
                                          " --output-len 10 -q",
                                      10, 10);
  ASSERT_TRUE(report.is_object());
  EXPECT_EQ(report["protocol"], "grpc");
  EXPECT_EQ(report["summary"]["total_input_tokens"].get<int>(), 10 * 40);
  // No --devices: the server's GetServerInfo says one device (the CPU).
  EXPECT_EQ(report["config"]["devices_source"], "GetServerInfo");
  EXPECT_EQ(report["summary"]["devices"].get<int>(), 1);
}

TEST_F(LoadtestDaemon, DevicesComeFromTheFlagOrGetServerInfo) {
  const std::string load = " --num-requests 2 --concurrency 2 --input-len 8 --output-len 4 -q";
  // HTTP with --grpc-target: asked there. --devices wins over the server's answer.
  const ToolRun asked =
      run_loadtest("--url " + url_of(port()) + " --grpc-target " + daemon_->grpc_target() + load);
  ASSERT_EQ(asked.code, 0) << asked.out << asked.err;
  ASSERT_TRUE(asked.report.is_object()) << asked.err;
  EXPECT_EQ(asked.report["config"]["devices_source"], "GetServerInfo");
  EXPECT_EQ(asked.report["summary"]["devices"].get<int>(), 1);
  EXPECT_NE(asked.out.find("Output tok/s per device (1)"), std::string::npos) << asked.out;
  const ToolRun flag = run_loadtest("--url " + url_of(port()) + " --grpc-target " +
                                    daemon_->grpc_target() + " --devices 4" + load);
  ASSERT_EQ(flag.code, 0) << flag.out << flag.err;
  ASSERT_TRUE(flag.report.is_object()) << flag.err;
  const json& s = flag.report["summary"];
  EXPECT_EQ(flag.report["config"]["devices_source"], "--devices");
  EXPECT_EQ(s["devices"].get<int>(), 4);
  EXPECT_DOUBLE_EQ(s["output_throughput_per_device"].get<double>(),
                   s["output_throughput"].get<double>() / 4);
  // HTTP alone has no GetServerInfo to ask: 1 is assumed, and stderr says so.
  const std::string quiet_load = load.substr(0, load.size() - 3);
  const ToolRun assumed = run_loadtest("--url " + url_of(port()) + quiet_load);
  ASSERT_EQ(assumed.code, 0) << assumed.out << assumed.err;
  ASSERT_TRUE(assumed.report.is_object()) << assumed.err;
  EXPECT_EQ(assumed.report["config"]["devices_source"], "assumed");
  EXPECT_EQ(assumed.report["summary"]["devices"].get<int>(), 1);
  EXPECT_NE(assumed.err.find("1 device assumed"), std::string::npos) << assumed.err;
}

TEST_F(LoadtestDaemon, GrpcMultiTurnChatCarriesTheAnswers) {
  const json report = run_and_compare(
      "--protocol grpc --grpc-target " + daemon_->grpc_target() + " --url " + url_of(port()) +
          " --dataset chat --turns 2 --num-requests 6 --concurrency 3 --input-len 16"
          " --output-len 6 -q",
      6, 6);
  ASSERT_TRUE(report.is_object());
  std::map<int64_t, std::map<int, int>> prompt_tokens;  // session -> turn -> tokens
  for (const json& r : report["requests"]) {
    prompt_tokens[r["session"].get<int64_t>()][r["turn"].get<int>()] = r["prompt_tokens"];
  }
  ASSERT_EQ(prompt_tokens.size(), 3u);
  for (const auto& [session, turns] : prompt_tokens) {
    ASSERT_EQ(turns.size(), 2u) << session;
    // The second turn holds the first question, its answer and a new question.
    EXPECT_GT(turns.at(1), turns.at(0) + 16 + 6 - 1) << session;
  }
}

TEST_F(LoadtestDaemon, SweepRunsEachRateAndReportsTheCapacity) {
  ASSERT_TRUE(wait_idle(30));
  const auto before = server_counters(port());
  const ToolRun run = run_loadtest("--url " + url_of(port()) +
                                   " --sweep-rates 4,8 --num-requests 4 --input-len 16"
                                   " --output-len 4 --seed 2 --goodput e2el:60000 -q");
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("Rate sweep: " + url_of(port())), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("Capacity: 8 req/s"), std::string::npos) << run.out;
  ASSERT_TRUE(run.report.is_object()) << run.err;
  const json& sweep = run.report["sweep"];
  EXPECT_EQ(sweep["capacity_request_rate"].get<double>(), 8.0);
  EXPECT_EQ(sweep["slo_fraction"].get<double>(), 0.9);
  ASSERT_EQ(sweep["points"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const json& p = sweep["points"][i];
    EXPECT_EQ(p["request_rate"].get<double>(), i == 0 ? 4.0 : 8.0);
    EXPECT_EQ(p["config"]["request_rate"].get<double>(), i == 0 ? 4.0 : 8.0);
    EXPECT_TRUE(p["meets_slo"].get<bool>());
    EXPECT_EQ(p["good_fraction"].get<double>(), 1.0);
    EXPECT_EQ(p["summary"]["num_completed"].get<int>(), 4);
    EXPECT_EQ(p["summary"]["total_output_tokens"].get<int>(), 16);
    expect_sane_records(p, 4);
  }
  ASSERT_TRUE(wait_idle(30));
  const auto after = server_counters(port());
  EXPECT_EQ(counter_delta(before, after, "lightserve_request_success_total"), 8.0);
}

TEST_F(LoadtestDaemon, CompareRunsTheSameLoadAgainstBothTargets) {
  // The same daemon twice (HTTP, then gRPC): the same prompts, both tables and the ratios.
  ASSERT_TRUE(wait_idle(30));
  const auto before = server_counters(port());
  const ToolRun run = run_loadtest("--url " + url_of(port()) + " --compare " + url_of(port()) +
                                   " --num-requests 6 --concurrency 3 --input-len 20"
                                   " --output-len 5 --range-ratio 0.5 --seed 3 -q");
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  size_t tables = 0;
  for (size_t at = run.out.find("Serving Benchmark Result"); at != std::string::npos;
       at = run.out.find("Serving Benchmark Result", at + 1)) {
    ++tables;
  }
  EXPECT_EQ(tables, 2u) << run.out;
  EXPECT_NE(run.out.find("Comparison (second / first)"), std::string::npos) << run.out;
  ASSERT_TRUE(run.report.is_object()) << run.err;
  ASSERT_EQ(run.report["runs"].size(), 2u);
  // Lengths vary per session (--range-ratio) and are the same session by session on both.
  std::map<int64_t, std::pair<int, int>> lengths[2];
  for (int i = 0; i < 2; ++i) {
    const json& doc = run.report["runs"][i];
    EXPECT_EQ(doc["summary"]["num_completed"].get<int>(), 6);
    EXPECT_EQ(doc["summary"]["num_failed"].get<int>(), 0);
    for (const json& r : doc["requests"]) {
      EXPECT_EQ(r["output_tokens"], r["max_tokens"]) << r.dump();
      lengths[i][r["session"].get<int64_t>()] = {r["prompt_tokens"].get<int>(),
                                                 r["output_tokens"].get<int>()};
    }
  }
  EXPECT_EQ(lengths[0].size(), 6u);
  EXPECT_EQ(lengths[0], lengths[1]);
  const json& ratios = run.report["comparison"];
  EXPECT_EQ(ratios["Successful requests"]["ratio"].get<double>(), 1.0);
  EXPECT_GT(ratios["Output token throughput (tok/s)"]["ratio"].get<double>(), 0.0);
  const json& r = ratios["Request throughput (req/s)"];
  EXPECT_DOUBLE_EQ(r["ratio"].get<double>(), r["second"].get<double>() / r["first"].get<double>());
  ASSERT_TRUE(wait_idle(30));
  const auto after = server_counters(port());
  EXPECT_EQ(counter_delta(before, after, "lightserve_request_success_total"), 12.0);

  // gRPC: --compare-grpc-target names the second server.
  const ToolRun grpc =
      run_loadtest("--protocol grpc --grpc-target " + daemon_->grpc_target() +
                   " --compare-grpc-target " + daemon_->grpc_target() +
                   " --num-requests 3 --concurrency 3 --input-len 12 --output-len 3 -q");
  ASSERT_EQ(grpc.code, 0) << grpc.out << grpc.err;
  ASSERT_TRUE(grpc.report.is_object()) << grpc.err;
  EXPECT_EQ(grpc.report["runs"][1]["protocol"], "grpc");
  EXPECT_EQ(grpc.report["runs"][1]["summary"]["num_completed"].get<int>(), 3);
  // A gRPC comparison without its second target is an option error.
  EXPECT_EQ(run_loadtest("--protocol grpc --compare " + url_of(port())).code, 2);
}

TEST(LoadtestTargets, NothingListeningIsAClearErrorForBothProtocols) {
  const int port = free_port();
  const ToolRun http = run_loadtest("--url " + url_of(port) + " --num-requests 2");
  EXPECT_EQ(http.code, 1) << http.err;
  EXPECT_NE(http.err.find("cannot reach http://127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << http.err;
  EXPECT_NE(http.err.find("Connection refused"), std::string::npos) << http.err;
  const ToolRun grpc = run_loadtest(
      "--protocol grpc --grpc-target 127.0.0.1:" + std::to_string(port) + " --num-requests 2");
  EXPECT_EQ(grpc.code, 1) << grpc.err;
  EXPECT_NE(grpc.err.find("does not answer as a lightserve server"), std::string::npos) << grpc.err;
}

TEST(LoadtestTargets, AServerThatIsNotOpenAiIsAClearError) {
  // A listener that answers every request with 404 (a web server that is not an OpenAI API).
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::thread server([fd] {
    const int c = ::accept(fd, nullptr, nullptr);
    if (c < 0) return;
    char buf[4096];
    (void)::read(c, buf, sizeof buf);
    const std::string answer =
        "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n";
    (void)::write(c, answer.data(), answer.size());
    ::close(c);
  });
  const ToolRun run = run_loadtest("--url " + url_of(ntohs(addr.sin_port)) + " --num-requests 2");
  server.join();
  ::close(fd);
  EXPECT_EQ(run.code, 1) << run.err;
  EXPECT_NE(run.err.find("is not an OpenAI-compatible server"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("404"), std::string::npos) << run.err;
}

TEST(LoadtestTargets, BadOptionsAreExitTwo) {
  EXPECT_EQ(run_loadtest("--concurrency 0").code, 2);
  EXPECT_EQ(run_loadtest("--dataset nonsense").code, 2);
  EXPECT_EQ(run_loadtest("--goodput ttft").code, 2);
  const ToolRun help = run_loadtest("--help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("--request-rate"), std::string::npos);
}

// The daemon is SIGKILLed while the tool runs: the requests in flight and those after fail, the
// tool reports them and exits 3, well before its request timeout.
void kill_mid_run(bool grpc) {
  if (!std::filesystem::exists(LIGHTSERVE_TEST_MODEL)) GTEST_SKIP() << "no model";
  DaemonProcess daemon = DaemonProcess::start(
      {"--model", LIGHTSERVE_TEST_MODEL, "--kv-budget", "64MiB", "--context", "512"});
  ASSERT_TRUE(daemon.ok()) << daemon.error();
  std::string args = grpc ? "--protocol grpc --grpc-target " + daemon.grpc_target() + " --url " +
                                url_of(daemon.http_port())
                          : "--url " + url_of(daemon.http_port());
  args.append(" --num-requests 40 --concurrency 4 --input-len 32 --output-len 200 --timeout 60 -q");
  const auto start = std::chrono::steady_clock::now();
  auto tool = std::async(std::launch::async, [&] { return run_loadtest(args); });
  // Kill once the server has generated something.
  for (int i = 0; i < 400; ++i) {
    HttpConnection c(daemon.http_port(), 5);
    const auto counters = lt::parse_prometheus(c.request("GET", "/metrics").body,
                                               {"lightserve_generation_tokens_total"});
    if (counters.count("lightserve_generation_tokens_total") &&
        counters.at("lightserve_generation_tokens_total") > 20) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  daemon.stop(SIGKILL);
  ASSERT_EQ(tool.wait_for(std::chrono::seconds(40)), std::future_status::ready) << "the tool hung";
  const ToolRun run = tool.get();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(45));
  EXPECT_EQ(run.code, 3) << run.out << run.err;
  ASSERT_TRUE(run.report.is_object()) << run.err;
  const json& s = run.report["summary"];
  EXPECT_GT(s["num_failed"].get<int>(), 0);
  EXPECT_EQ(s["num_completed"].get<int>() + s["num_failed"].get<int>(), 40);
  EXPECT_NE(run.out.find("failed: "), std::string::npos) << run.out;
  EXPECT_NE(run.err.find("request(s) failed"), std::string::npos) << run.err;
}

TEST(LoadtestKilledServer, HttpRequestsFailAndTheToolExits) {
  kill_mid_run(false);
}
TEST(LoadtestKilledServer, GrpcRequestsFailAndTheToolExits) {
  kill_mid_run(true);
}

// ---- pure parts ----

TEST(LoadtestSse, SplitsEventsAcrossReadsAndReadsUsage) {
  lt::SseParser parser;
  lt::StreamResult result;
  const auto now = lt::Clock::now();
  parser.feed("data: {\"choices\":[{\"text\":\"Hel\",\"finish_reason\":null}]}\n\nda", now, result);
  parser.feed("ta: {\"choices\":[{\"text\":\"lo\",\"finish_reason\":\"length\"}]}\r\n\r\n", now,
              result);
  parser.feed(
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n"
      "data: [DONE]\n\n",
      now, result);
  EXPECT_EQ(result.text, "Hello");
  EXPECT_EQ(result.chunks.size(), 2u);
  EXPECT_EQ(result.prompt_tokens, 5);
  EXPECT_EQ(result.completion_tokens, 2);
  EXPECT_TRUE(parser.done());
  EXPECT_TRUE(parser.finished());
  EXPECT_TRUE(result.ok());
}

TEST(LoadtestSse, ChatRoleChunkIsNotATokenAndErrorsAreReported) {
  lt::SseParser parser;
  lt::StreamResult result;
  const auto now = lt::Clock::now();
  parser.feed("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
              now, result);
  EXPECT_TRUE(result.chunks.empty());
  parser.feed("data: {\"error\":{\"message\":\"engine failed\"}}\n\n", now, result);
  EXPECT_EQ(result.error_reason, "stream_error");
}

TEST(LoadtestReport, PercentilesInterpolateAsNumpy) {
  const lt::Distribution d = lt::distribution_ms({0.001, 0.002, 0.003, 0.004});
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.median, 2.5);
  EXPECT_NEAR(d.p90, 3.7, 1e-9);
  EXPECT_NEAR(d.p99, 3.97, 1e-9);
}

TEST(LoadtestReport, GoodputCountsRequestsMeetingEverySlo) {
  auto slo = lt::parse_slo({"ttft:100", "e2el:1000"});
  ASSERT_TRUE(slo.ok());
  std::vector<lt::RequestRecord> records(3);
  for (auto& r : records) {
    r.ok = true;
    r.output_tokens = 10;
    r.e2e_s = 0.5;
    r.ttft_s = 0.05;
  }
  records[1].ttft_s = 0.2;  // misses the TTFT SLO
  records[2].e2e_s = 2.0;   // misses the E2E SLO
  const lt::Summary s = lt::summarize(records, 2.0, 3, 2, slo.value(), {});
  EXPECT_EQ(s.num_good, 1);
  EXPECT_DOUBLE_EQ(s.goodput, 0.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 15.0);
  EXPECT_DOUBLE_EQ(s.output_throughput_per_device, 7.5);
  EXPECT_FALSE(lt::parse_slo({"latency:5"}).ok());
}

TEST(LoadtestDataset, SessionsAreReproducibleAndSized) {
  lt::DatasetConfig config;
  config.input_len = 100;
  config.output_len = 20;
  config.range_ratio = 0.5;
  config.seed = 7;
  auto ds = lt::Dataset::create(config);
  ASSERT_TRUE(ds.ok());
  const lt::SessionPlan a = ds->session(3), b = ds->session(3), c = ds->session(4);
  EXPECT_EQ(a.prompts, b.prompts);
  EXPECT_NE(a.prompts, c.prompts);
  for (int64_t id = 0; id < 50; ++id) {
    const lt::SessionPlan p = ds->session(id);
    EXPECT_GE(p.output_lens[0], 10);
    EXPECT_LE(p.output_lens[0], 30);
    const auto words = std::count(p.prompts[0].begin(), p.prompts[0].end(), ' ') + 1;
    EXPECT_EQ(words, p.approx_prompt_tokens[0]);
  }
  config.kind = lt::DatasetKind::kReasoning;
  config.input_len = -1;
  config.output_len = -1;
  auto reasoning = lt::Dataset::create(config);
  ASSERT_TRUE(reasoning.ok());
  EXPECT_EQ(reasoning->input_len(), 512);
  EXPECT_EQ(reasoning->output_len(), 7500);
  config.kind = lt::DatasetKind::kFile;
  EXPECT_FALSE(lt::Dataset::create(config).ok());  // needs --dataset-path
}

TEST(LoadtestMetrics, SumsLabelSetsOfTheNamedFamilies) {
  const std::string text =
      "# HELP x\n"
      "lightserve_request_success_total{finished_reason=\"stop\",model_name=\"m\"} 2\n"
      "lightserve_request_success_total{finished_reason=\"length\",model_name=\"m\"} 5\n"
      "vllm:num_requests_running{model_name=\"m\"} 3.0\n"
      "lightserve_request_success_total_created 17\n";
  const auto v = lt::parse_prometheus(
      text, {"lightserve_request_success_total", "vllm:num_requests_running", "absent"});
  EXPECT_EQ(v.at("lightserve_request_success_total"), 7);
  EXPECT_EQ(v.at("vllm:num_requests_running"), 3);
  EXPECT_EQ(v.count("absent"), 0u);
}

TEST(LoadtestSweep, ParsesRatesAndTheSloRule) {
  auto rates = lt::parse_sweep_rates("0.5,1,2");
  ASSERT_TRUE(rates.ok());
  EXPECT_EQ(rates->rates, (std::vector<double>{0.5, 1, 2}));
  EXPECT_TRUE(lt::parse_sweep_rates("auto")->automatic);
  EXPECT_FALSE(lt::parse_sweep_rates("1,,2").ok());
  EXPECT_FALSE(lt::parse_sweep_rates("1,-2").ok());
  EXPECT_FALSE(lt::parse_sweep_rates("inf").ok());
  lt::Summary s;
  s.has_slo = true;
  s.num_completed = 9;
  s.num_failed = 1;
  s.num_good = 9;
  EXPECT_DOUBLE_EQ(lt::good_fraction(s), 0.9);
  EXPECT_TRUE(lt::meets_slo(s, 0.9));
  s.num_good = 8;  // a failure and a slow request: 80%
  EXPECT_FALSE(lt::meets_slo(s, 0.9));
  s.has_slo = false;  // without SLOs: the share that succeeded
  EXPECT_TRUE(lt::meets_slo(s, 0.9));
  EXPECT_FALSE(lt::meets_slo(lt::Summary{}, 0.0));  // no requests: nothing was shown
}

TEST(LoadtestSweep, AutoDoublesThenBisects) {
  lt::RateSearch search(1.0, 2, 12);
  std::vector<double> tried;
  // The SLOs hold up to 5 req/s.
  while (auto rate = search.next()) {
    tried.push_back(*rate);
    search.record(*rate, *rate <= 5.0);
  }
  EXPECT_EQ(tried, (std::vector<double>{1, 2, 4, 8, 6, 5}));
  EXPECT_EQ(search.highest_passing(), 5.0);
  EXPECT_EQ(search.lowest_failing(), 6.0);
  // The first rate misses: halve until one passes, then bisect.
  lt::RateSearch down(8.0, 1, 12);
  tried.clear();
  while (auto rate = down.next()) {
    tried.push_back(*rate);
    down.record(*rate, *rate <= 1.5);
  }
  EXPECT_EQ(tried, (std::vector<double>{8, 4, 2, 1, 1.5}));
  // Never failing: stops at the point limit.
  lt::RateSearch up(1.0, 3, 4);
  tried.clear();
  while (auto rate = up.next()) {
    tried.push_back(*rate);
    up.record(*rate, true);
  }
  EXPECT_EQ(tried, (std::vector<double>{1, 2, 4, 8}));
  std::vector<lt::SweepPoint> points(3);
  points[0].request_rate = 1, points[0].meets_slo = true;
  points[1].request_rate = 2, points[1].meets_slo = false;
  points[2].request_rate = 3, points[2].meets_slo = true;
  EXPECT_EQ(lt::capacity(points), 3.0);
  points[2].meets_slo = false;
  EXPECT_EQ(lt::capacity(points), 1.0);
}

TEST(LoadtestCompare, RatiosAreSecondOverFirst) {
  lt::Summary a, b;
  a.output_throughput = 100;
  b.output_throughput = 150;
  a.ttft.median = 20;
  b.ttft.median = 10;
  const auto rows = lt::headline_ratios(a, b);
  std::map<std::string, double> ratio;
  for (const auto& h : rows) ratio[h.name] = h.ratio();
  EXPECT_DOUBLE_EQ(ratio.at("Output token throughput (tok/s)"), 1.5);
  EXPECT_DOUBLE_EQ(ratio.at("Median TTFT (ms)"), 0.5);
  EXPECT_TRUE(std::isnan(ratio.at("Request throughput (req/s)")));  // 0 / 0
  EXPECT_TRUE(lt::comparison_json(rows)["Request throughput (req/s)"]["ratio"].is_null());
}

}  // namespace
}  // namespace lightserve::testing
