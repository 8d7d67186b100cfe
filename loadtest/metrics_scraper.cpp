#include "loadtest/metrics_scraper.h"

#include <algorithm>
#include <cstdlib>

namespace lightserve::loadtest {

const std::vector<std::string>& tracked_gauges() {
  static const std::vector<std::string> names = {
      // lightserve (serving/metrics.cpp)
      "lightserve_kv_cache_usage_perc",
      "lightserve_num_requests_running",
      "lightserve_num_requests_waiting",
      "lightserve_num_requests_held",
      // vLLM (v1 names, and the v0 name of KV usage)
      "vllm:kv_cache_usage_perc",
      "vllm:gpu_cache_usage_perc",
      "vllm:num_requests_running",
      "vllm:num_requests_waiting",
      // llama.cpp's llama-server (--metrics)
      "llamacpp:kv_cache_usage_ratio",
      "llamacpp:requests_processing",
      "llamacpp:requests_deferred",
  };
  return names;
}

const std::vector<std::string>& tracked_counters() {
  static const std::vector<std::string> names = {
      "lightserve_request_success_total",   "lightserve_prompt_tokens_total",
      "lightserve_generation_tokens_total", "lightserve_num_preemptions_total",
      "vllm:request_success_total",         "vllm:prompt_tokens_total",
      "vllm:generation_tokens_total",       "llamacpp:prompt_tokens_total",
      "llamacpp:tokens_predicted_total",
  };
  return names;
}

std::map<std::string, double> parse_prometheus(std::string_view text,
                                               const std::vector<std::string>& names) {
  std::map<std::string, double> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.empty() || line.front() == '#') continue;
    const size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string_view::npos) continue;
    const std::string_view name = line.substr(0, name_end);
    if (std::find(names.begin(), names.end(), name) == names.end()) continue;
    size_t value_start = name_end;
    if (line[name_end] == '{') {
      const size_t close = line.rfind('}');
      if (close == std::string_view::npos) continue;
      value_start = close + 1;
    }
    const std::string rest(line.substr(value_start));
    char* end = nullptr;
    const double value = std::strtod(rest.c_str(), &end);
    if (end == rest.c_str()) continue;
    out[std::string(name)] += value;
  }
  return out;
}

std::map<std::string, double> scrape_once(const HttpTarget& target, const std::string& api_key,
                                          std::string* error) {
  const HttpReply reply = http_fetch_blocking(target, "/metrics", "", false, api_key, 10);
  if (reply.status != 200) {
    if (error != nullptr) {
      *error = reply.status == 0 ? reply.error_detail
                                 : "GET /metrics answered " + std::to_string(reply.status);
    }
    return {};
  }
  std::vector<std::string> names = tracked_gauges();
  names.insert(names.end(), tracked_counters().begin(), tracked_counters().end());
  return parse_prometheus(reply.body, names);
}

}  // namespace lightserve::loadtest
