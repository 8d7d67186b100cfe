// From what the clients observed to the numbers `vllm bench serve` reports: per-request records,
// distributions (mean, median, p90, p99), throughput, goodput under SLOs; the stdout table and
// the --json document.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "base/status.h"
#include "loadtest/metrics_scraper.h"
#include "loadtest/request.h"

namespace lightserve::loadtest {

// One request as measured. Times in seconds; `start_s` from the measured run's start.
struct RequestRecord {
  int64_t session = 0;
  int turn = 0;
  bool warmup = false;
  bool ok = false;
  std::string error_reason;
  std::string error_detail;
  double start_s = 0;
  double ttft_s = -1;  // first chunk with content; -1 when none came
  double e2e_s = 0;
  std::vector<double> itl_s;  // gaps between consecutive content chunks
  int prompt_tokens = 0;
  bool prompt_tokens_from_server = false;
  int output_tokens = 0;
  bool output_tokens_from_server = false;
  int max_tokens = 0;
  // (e2e − ttft) / (output_tokens − 1); -1 when fewer than two tokens.
  double tpot_s() const;
};

RequestRecord make_record(const RequestSpec& spec, const StreamResult& result,
                          Clock::time_point run_start);

// Service-level objectives in milliseconds; a request is "good" when it meets every one given.
struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;
  bool any() const { return ttft_ms || tpot_ms || e2el_ms; }
};
// "ttft:500", "tpot:50", "e2el:10000" (each item one SLO).
Result<Slo> parse_slo(const std::vector<std::string>& items);

struct Distribution {
  size_t count = 0;
  double mean = 0, median = 0, p90 = 0, p99 = 0, min = 0, max = 0;  // milliseconds
};
// Percentiles interpolate linearly between order statistics (numpy's default, as vLLM).
Distribution distribution_ms(std::vector<double> seconds);

struct GaugeSummary {
  double max = 0, mean = 0;
  size_t count = 0;
};

struct Summary {
  int num_completed = 0;
  int num_failed = 0;
  std::map<std::string, int> failures;  // reason -> count
  double duration_s = 0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  double request_throughput = 0;  // completed / s
  double output_throughput = 0;   // tok / s
  double total_token_throughput = 0;
  int devices = 1;
  double output_throughput_per_device = 0;
  int peak_concurrency = 0;
  Distribution ttft, tpot, itl, e2el;
  bool has_slo = false;
  int num_good = 0;
  double goodput = 0;  // good requests / s
  std::map<std::string, GaugeSummary> gauges;
  std::map<std::string, double> server_counter_deltas;
};

Summary summarize(const std::vector<RequestRecord>& records, double duration_s,
                  int peak_concurrency, int devices, const Slo& slo, const MetricsSeries& metrics);

// What the run was, for the table's header and the JSON.
struct RunInfo {
  std::string target;
  std::string protocol;  // "http-completions", "http-chat", "grpc"
  std::string model;
  std::string dataset;
  std::string load;  // "closed loop, concurrency 4" / "open loop, 2 req/s, burstiness 1"
  nlohmann::json config;
};

void print_table(std::ostream& out, const RunInfo& info, const Summary& summary);
nlohmann::json to_json(const RunInfo& info, const Summary& summary,
                       const std::vector<RequestRecord>& records, const MetricsSeries& metrics);

}  // namespace lightserve::loadtest
