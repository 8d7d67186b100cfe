#include "loadtest/report.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

namespace lightserve::loadtest {

using json = nlohmann::json;

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double rank = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(rank);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

std::string format(const char* fmt, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, value);
  return buf;
}

void row(std::ostream& out, const std::string& label, const std::string& value) {
  std::string line = label;
  line.append(":");
  if (line.size() < 42) line.append(42 - line.size(), ' ');
  line.append(value);
  out << line << '\n';
}

void rule(std::ostream& out, const std::string& title, char fill) {
  const size_t width = 50;
  std::string line;
  const size_t pad = title.size() + 2 < width ? (width - title.size()) / 2 : 0;
  line.append(pad, fill);
  line.append(title);
  line.append(width > line.size() ? width - line.size() : 0, fill);
  out << line << '\n';
}

json distribution_json(const Distribution& d) {
  return {{"count", d.count}, {"mean_ms", d.mean}, {"median_ms", d.median}, {"p90_ms", d.p90},
          {"p99_ms", d.p99},  {"min_ms", d.min},   {"max_ms", d.max}};
}

}  // namespace

double RequestRecord::tpot_s() const {
  if (output_tokens < 2 || ttft_s < 0) return -1;
  return (e2e_s - ttft_s) / (output_tokens - 1);
}

RequestRecord make_record(const RequestSpec& spec, const StreamResult& result,
                          Clock::time_point run_start) {
  RequestRecord r;
  r.session = spec.session;
  r.turn = spec.turn;
  r.ok = result.ok();
  r.error_reason = result.error_reason;
  r.error_detail = result.error_detail;
  r.start_s = seconds_between(run_start, result.start);
  r.e2e_s = seconds_between(result.start, result.end);
  r.max_tokens = spec.max_tokens;
  if (!result.chunks.empty()) r.ttft_s = seconds_between(result.start, result.chunks[0].arrival);
  for (size_t i = 1; i < result.chunks.size(); ++i) {
    r.itl_s.push_back(seconds_between(result.chunks[i - 1].arrival, result.chunks[i].arrival));
  }
  if (result.completion_tokens) {
    r.output_tokens = *result.completion_tokens;
    r.output_tokens_from_server = true;
  } else {
    for (const Chunk& c : result.chunks) r.output_tokens += c.num_tokens;
  }
  if (result.prompt_tokens) {
    r.prompt_tokens = *result.prompt_tokens;
    r.prompt_tokens_from_server = true;
  } else {
    r.prompt_tokens = spec.approx_prompt_tokens;
  }
  return r;
}

Result<Slo> parse_slo(const std::vector<std::string>& items) {
  Slo slo;
  for (const std::string& item : items) {
    const size_t colon = item.find(':');
    const std::string key = item.substr(0, colon);
    char* end = nullptr;
    const std::string number = colon == std::string::npos ? "" : item.substr(colon + 1);
    const double ms = std::strtod(number.c_str(), &end);
    if (number.empty() || *end != '\0' || !(ms > 0)) {
      return Error{"--goodput takes KEY:MILLISECONDS items (ttft, tpot, e2el), got '" + item + "'"};
    }
    if (key == "ttft") {
      slo.ttft_ms = ms;
    } else if (key == "tpot") {
      slo.tpot_ms = ms;
    } else if (key == "e2el") {
      slo.e2el_ms = ms;
    } else {
      return Error{"--goodput: unknown SLO '" + key + "' (ttft, tpot, e2el)"};
    }
  }
  return slo;
}

Distribution distribution_ms(std::vector<double> seconds) {
  Distribution d;
  d.count = seconds.size();
  if (seconds.empty()) return d;
  for (double& s : seconds) s *= 1000.0;
  std::sort(seconds.begin(), seconds.end());
  d.mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / static_cast<double>(d.count);
  d.median = percentile(seconds, 50);
  d.p90 = percentile(seconds, 90);
  d.p99 = percentile(seconds, 99);
  d.min = seconds.front();
  d.max = seconds.back();
  return d;
}

Summary summarize(const std::vector<RequestRecord>& records, double duration_s,
                  int peak_concurrency, int devices, const Slo& slo, const MetricsSeries& metrics) {
  Summary s;
  s.duration_s = duration_s;
  s.devices = std::max(1, devices);
  s.peak_concurrency = peak_concurrency;
  s.has_slo = slo.any();
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestRecord& r : records) {
    if (r.warmup) continue;
    if (!r.ok) {
      ++s.num_failed;
      ++s.failures[r.error_reason];
      continue;
    }
    ++s.num_completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    const double t = r.tpot_s();
    if (t >= 0) tpot.push_back(t);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    e2el.push_back(r.e2e_s);
    if (s.has_slo) {
      const bool good = (!slo.ttft_ms || (r.ttft_s >= 0 && r.ttft_s * 1000 <= *slo.ttft_ms)) &&
                        (!slo.tpot_ms || t * 1000 <= *slo.tpot_ms) &&
                        (!slo.e2el_ms || r.e2e_s * 1000 <= *slo.e2el_ms);
      if (good) ++s.num_good;
    }
  }
  if (duration_s > 0) {
    s.request_throughput = s.num_completed / duration_s;
    s.output_throughput = static_cast<double>(s.total_output_tokens) / duration_s;
    s.total_token_throughput =
        static_cast<double>(s.total_input_tokens + s.total_output_tokens) / duration_s;
    s.goodput = s.num_good / duration_s;
  }
  s.output_throughput_per_device = s.output_throughput / s.devices;
  s.ttft = distribution_ms(std::move(ttft));
  s.tpot = distribution_ms(std::move(tpot));
  s.itl = distribution_ms(std::move(itl));
  s.e2el = distribution_ms(std::move(e2el));
  for (const MetricsSample& sample : metrics.samples) {
    if (sample.time_s < 0) continue;
    for (const auto& [name, value] : sample.values) {
      GaugeSummary& g = s.gauges[name];
      g.max = g.count == 0 ? value : std::max(g.max, value);
      g.mean += value;
      ++g.count;
    }
  }
  for (auto& [name, g] : s.gauges) g.mean /= static_cast<double>(g.count);
  for (const auto& [name, after] : metrics.counters_after) {
    const std::vector<std::string>& counters = tracked_counters();
    if (std::find(counters.begin(), counters.end(), name) == counters.end()) continue;
    const auto before = metrics.counters_before.find(name);
    s.server_counter_deltas[name] =
        after - (before == metrics.counters_before.end() ? 0.0 : before->second);
  }
  return s;
}

void print_table(std::ostream& out, const RunInfo& info, const Summary& s) {
  rule(out, " Serving Benchmark Result ", '=');
  row(out, "Target", info.target + " (" + info.protocol + ")");
  row(out, "Model", info.model);
  row(out, "Dataset", info.dataset);
  row(out, "Load", info.load);
  row(out, "Successful requests", std::to_string(s.num_completed));
  row(out, "Failed requests", std::to_string(s.num_failed));
  for (const auto& [reason, count] : s.failures) {
    row(out, "  failed: " + reason, std::to_string(count));
  }
  row(out, "Benchmark duration (s)", format("%.2f", s.duration_s));
  row(out, "Total input tokens", std::to_string(s.total_input_tokens));
  row(out, "Total generated tokens", std::to_string(s.total_output_tokens));
  row(out, "Request throughput (req/s)", format("%.2f", s.request_throughput));
  if (s.has_slo) row(out, "Request goodput (req/s)", format("%.2f", s.goodput));
  row(out, "Output token throughput (tok/s)", format("%.2f", s.output_throughput));
  row(out, "Total token throughput (tok/s)", format("%.2f", s.total_token_throughput));
  row(out, "Output tok/s per device (" + std::to_string(s.devices) + ")",
      format("%.2f", s.output_throughput_per_device));
  row(out, "Peak concurrent requests", std::to_string(s.peak_concurrency));
  const auto section = [&](const char* title, const char* name, const Distribution& d) {
    rule(out, title, '-');
    const std::string n = name;
    row(out, "Mean " + n + " (ms)", format("%.2f", d.mean));
    row(out, "Median " + n + " (ms)", format("%.2f", d.median));
    row(out, "P90 " + n + " (ms)", format("%.2f", d.p90));
    row(out, "P99 " + n + " (ms)", format("%.2f", d.p99));
  };
  section("Time to First Token", "TTFT", s.ttft);
  section("Time per Output Token (excl. 1st token)", "TPOT", s.tpot);
  section("Inter-token Latency", "ITL", s.itl);
  section("End-to-end Latency", "E2EL", s.e2el);
  if (!s.gauges.empty()) {
    rule(out, "Server metrics (max / mean)", '-');
    for (const auto& [name, g] : s.gauges) {
      row(out, name, format("%.3f", g.max) + " / " + format("%.3f", g.mean));
    }
  }
  rule(out, "", '=');
}

json to_json(const RunInfo& info, const Summary& s, const std::vector<RequestRecord>& records,
             const MetricsSeries& metrics) {
  json failures = json::object();
  for (const auto& [reason, count] : s.failures) failures[reason] = count;
  json gauges = json::object();
  for (const auto& [name, g] : s.gauges) {
    gauges[name] = {{"max", g.max}, {"mean", g.mean}, {"num_samples", g.count}};
  }
  json summary = {{"num_completed", s.num_completed},
                  {"num_failed", s.num_failed},
                  {"failures", failures},
                  {"duration_s", s.duration_s},
                  {"total_input_tokens", s.total_input_tokens},
                  {"total_output_tokens", s.total_output_tokens},
                  {"request_throughput", s.request_throughput},
                  {"output_throughput", s.output_throughput},
                  {"total_token_throughput", s.total_token_throughput},
                  {"devices", s.devices},
                  {"output_throughput_per_device", s.output_throughput_per_device},
                  {"peak_concurrency", s.peak_concurrency},
                  {"ttft", distribution_json(s.ttft)},
                  {"tpot", distribution_json(s.tpot)},
                  {"itl", distribution_json(s.itl)},
                  {"e2el", distribution_json(s.e2el)},
                  {"server_metrics", gauges},
                  {"server_counter_deltas", s.server_counter_deltas}};
  if (s.has_slo) {
    summary["num_good"] = s.num_good;
    summary["goodput"] = s.goodput;
  }
  json requests = json::array();
  for (const RequestRecord& r : records) {
    json item = {{"session", r.session},
                 {"turn", r.turn},
                 {"warmup", r.warmup},
                 {"ok", r.ok},
                 {"start_s", r.start_s},
                 {"ttft_s", r.ttft_s},
                 {"tpot_s", r.tpot_s()},
                 {"e2e_s", r.e2e_s},
                 {"itl_s", r.itl_s},
                 {"prompt_tokens", r.prompt_tokens},
                 {"prompt_tokens_from_server", r.prompt_tokens_from_server},
                 {"output_tokens", r.output_tokens},
                 {"output_tokens_from_server", r.output_tokens_from_server},
                 {"max_tokens", r.max_tokens}};
    if (!r.ok) {
      item["error_reason"] = r.error_reason;
      item["error_detail"] = r.error_detail;
    }
    requests.push_back(std::move(item));
  }
  json series = json::array();
  for (const MetricsSample& sample : metrics.samples) {
    json values = json::object();
    for (const auto& [name, value] : sample.values) values[name] = value;
    series.push_back({{"time_s", sample.time_s}, {"values", values}});
  }
  return {{"target", info.target},
          {"protocol", info.protocol},
          {"model", info.model},
          {"dataset", info.dataset},
          {"load", info.load},
          {"config", info.config},
          {"summary", summary},
          {"requests", requests},
          {"metrics",
           {{"series", series},
            {"num_failed_scrapes", metrics.num_failed_scrapes},
            {"last_error", metrics.last_error},
            {"counters_before", metrics.counters_before},
            {"counters_after", metrics.counters_after}}}};
}

}  // namespace lightserve::loadtest
