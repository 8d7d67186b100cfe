// Reads a server's Prometheus /metrics while a load runs: the gauges that say how full the
// server is (lightserve's, vLLM's and llama.cpp's names) sampled every interval, and the
// counters read before and after the run so the report can set the server's counts beside the
// client's.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "loadtest/http_client.h"

namespace lightserve::loadtest {

// Sum over label sets of each metric family named in `names`, from Prometheus text format.
// Names absent from the text are absent from the map.
std::map<std::string, double> parse_prometheus(std::string_view text,
                                               const std::vector<std::string>& names);

// The gauges sampled over time and the counters compared before/after.
const std::vector<std::string>& tracked_gauges();
const std::vector<std::string>& tracked_counters();

struct MetricsSample {
  double time_s = 0;  // since the measured run began (negative: before)
  std::map<std::string, double> values;
};

struct MetricsSeries {
  std::vector<MetricsSample> samples;
  int num_failed_scrapes = 0;
  std::string last_error;
  std::map<std::string, double> counters_before;
  std::map<std::string, double> counters_after;
};

// GET /metrics once; the tracked gauges and counters, or empty with `error` set.
std::map<std::string, double> scrape_once(const HttpTarget& target, const std::string& api_key,
                                          std::string* error);

}  // namespace lightserve::loadtest
