// Drives a Client with a load shape and collects a record per request.
//
// Closed loop (`concurrency` users, each sending its next request when the previous one ends)
// or open loop (sessions arrive with gamma-distributed gaps of mean 1 / request_rate, shape
// `burstiness`: 1 is Poisson, as `vllm bench serve`; `max_concurrency` makes arrivals wait for a
// free place). A chat session's turns run one after another, each carrying the previous answers.
// Everything runs on one io_context, on the thread that calls run(); clients that complete on
// other threads (gRPC) post back to it, so the bookkeeping needs no lock.
#pragma once

#include <boost/asio/io_context.hpp>
#include <limits>
#include <optional>
#include <vector>

#include "loadtest/dataset.h"
#include "loadtest/metrics_scraper.h"
#include "loadtest/report.h"
#include "loadtest/request.h"

namespace lightserve::loadtest {

struct LoadConfig {
  int concurrency = 1;  // closed loop (used when request_rate is infinite)
  double request_rate = std::numeric_limits<double>::infinity();
  double burstiness = 1.0;
  int max_concurrency = 0;   // open loop: sessions in flight at most; 0 = no cap
  int64_t num_requests = 0;  // 0: until `duration_s`
  double duration_s = 0;     // 0: until `num_requests`
  uint64_t seed = 0;
  int64_t first_session = 0;  // session ids start here (the warm-up uses its own)
  bool warmup = false;        // records are marked warm-up
};

struct RunnerOptions {
  bool progress = true;                      // a status line on stderr
  std::optional<HttpTarget> metrics_target;  // scrape /metrics there while running
  double metrics_interval_s = 1.0;
  std::string api_key;
};

struct RunOutcome {
  std::vector<RequestRecord> records;
  double duration_s = 0;
  int peak_concurrency = 0;
  MetricsSeries metrics;
};

// Runs the load to its end (count reached, or duration passed and the last request returned).
RunOutcome run_load(boost::asio::io_context& io, Client& client, const Dataset& dataset,
                    const LoadConfig& load, const RunnerOptions& options);

}  // namespace lightserve::loadtest
