#include "loadtest/sweep.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace lightserve::loadtest {

using json = nlohmann::json;

namespace {

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

std::string pad(std::string s, size_t width) {
  if (s.size() < width) s.insert(0, width - s.size(), ' ');
  return s;
}

}  // namespace

Result<SweepSpec> parse_sweep_rates(const std::string& text) {
  SweepSpec spec;
  if (text == "auto") {
    spec.automatic = true;
    return spec;
  }
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t comma = text.find(',', begin);
    const std::string item =
        text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    char* end = nullptr;
    const double rate = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !std::isfinite(rate) || !(rate > 0)) {
      return Error{
          "--sweep-rates takes 'auto' or positive request rates separated by commas "
          "(e.g. 0.5,1,2), got '" +
          item + "'"};
    }
    spec.rates.push_back(rate);
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return spec;
}

double good_fraction(const Summary& s) {
  const int total = s.num_completed + s.num_failed;
  if (total == 0) return 0;
  const int good = s.has_slo ? s.num_good : s.num_completed;
  return static_cast<double>(good) / total;
}

bool meets_slo(const Summary& s, double slo_fraction) {
  return s.num_completed + s.num_failed > 0 && good_fraction(s) >= slo_fraction;
}

RateSearch::RateSearch(double start, int bisect_steps, int max_points)
    : start_(start), bisect_steps_(bisect_steps), max_points_(max_points) {}

std::optional<double> RateSearch::next() const {
  if (num_points_ >= max_points_) return std::nullopt;
  if (!last_) return start_;
  if (!hi_) return *last_ * 2;  // everything so far passed: double
  if (!lo_) return *last_ / 2;  // everything so far failed: halve
  if (num_bisections_ >= bisect_steps_) return std::nullopt;
  return (*lo_ + *hi_) / 2;
}

void RateSearch::record(double rate, bool passed) {
  if (lo_ && hi_) ++num_bisections_;
  ++num_points_;
  last_ = rate;
  if (passed) {
    if (!lo_ || rate > *lo_) lo_ = rate;
  } else {
    if (!hi_ || rate < *hi_) hi_ = rate;
  }
}

std::optional<double> capacity(const std::vector<SweepPoint>& points) {
  std::optional<double> best;
  for (const SweepPoint& p : points) {
    if (p.meets_slo && (!best || p.request_rate > *best)) best = p.request_rate;
  }
  return best;
}

void print_sweep_table(std::ostream& out, const std::string& target,
                       const std::vector<SweepPoint>& points, const std::string& rule,
                       int devices) {
  out << "Rate sweep: " << target << '\n';
  out << "SLO rule: " << rule << '\n';
  out << "   rate  ok/fail    req/s  out tok/s  TTFT p50/p99 (ms)  TPOT p50/p99 (ms)  E2EL p99 (ms)"
         "   good  SLO\n";
  for (const SweepPoint& p : points) {
    const Summary& s = p.summary;
    out << pad(fmt("%.3g", p.request_rate), 7) << ' '
        << pad(std::to_string(s.num_completed) + "/" + std::to_string(s.num_failed), 8) << ' '
        << pad(fmt("%.3f", s.request_throughput), 8) << ' '
        << pad(fmt("%.1f", s.output_throughput), 10) << ' '
        << pad(fmt("%.0f", s.ttft.median) + " / " + fmt("%.0f", s.ttft.p99), 18) << ' '
        << pad(fmt("%.1f", s.tpot.median) + " / " + fmt("%.1f", s.tpot.p99), 18) << ' '
        << pad(fmt("%.0f", s.e2el.p99), 14) << ' ' << pad(fmt("%.0f%%", p.good_fraction * 100), 6)
        << "  " << (p.meets_slo ? "met" : "MISSED") << '\n';
  }
  const std::optional<double> cap = capacity(points);
  if (cap) {
    out << "Capacity: " << fmt("%.3g", *cap) << " req/s (" << fmt("%.3g", *cap / devices)
        << " req/s per device, " << devices << " device(s))\n";
  } else {
    out << "Capacity: no rate met the SLOs\n";
  }
}

json sweep_json(const std::vector<SweepPoint>& points, const std::string& rule, double slo_fraction,
                int devices) {
  json list = json::array();
  for (const SweepPoint& p : points) {
    json item = p.report;
    item["request_rate"] = p.request_rate;
    item["good_fraction"] = p.good_fraction;
    item["meets_slo"] = p.meets_slo;
    list.push_back(std::move(item));
  }
  const std::optional<double> cap = capacity(points);
  return {{"rule", rule},
          {"slo_fraction", slo_fraction},
          {"devices", devices},
          {"capacity_request_rate", cap ? json(*cap) : json(nullptr)},
          {"capacity_per_device", cap ? json(*cap / devices) : json(nullptr)},
          {"points", list}};
}

double Headline::ratio() const {
  if (first == 0) return std::numeric_limits<double>::quiet_NaN();
  return second / first;
}

std::vector<Headline> headline_ratios(const Summary& a, const Summary& b) {
  return {{"Successful requests", static_cast<double>(a.num_completed),
           static_cast<double>(b.num_completed)},
          {"Request throughput (req/s)", a.request_throughput, b.request_throughput},
          {"Output token throughput (tok/s)", a.output_throughput, b.output_throughput},
          {"Total token throughput (tok/s)", a.total_token_throughput, b.total_token_throughput},
          {"Request goodput (req/s)", a.goodput, b.goodput},
          {"Median TTFT (ms)", a.ttft.median, b.ttft.median},
          {"P99 TTFT (ms)", a.ttft.p99, b.ttft.p99},
          {"Median TPOT (ms)", a.tpot.median, b.tpot.median},
          {"P99 TPOT (ms)", a.tpot.p99, b.tpot.p99},
          {"Median ITL (ms)", a.itl.median, b.itl.median},
          {"Median E2EL (ms)", a.e2el.median, b.e2el.median},
          {"P99 E2EL (ms)", a.e2el.p99, b.e2el.p99}};
}

void print_comparison(std::ostream& out, const std::string& first_target,
                      const std::string& second_target, const std::vector<Headline>& rows) {
  out << "=============== Comparison (second / first) ===============\n";
  out << "first:  " << first_target << '\n' << "second: " << second_target << '\n';
  out << "                                      first      second   ratio\n";
  for (const Headline& h : rows) {
    std::string line = h.name;
    if (line.size() < 34) line.append(34 - line.size(), ' ');
    const double r = h.ratio();
    out << line << pad(fmt("%.2f", h.first), 11) << ' ' << pad(fmt("%.2f", h.second), 11) << ' '
        << pad(std::isnan(r) ? std::string("-") : fmt("%.3f", r), 7) << '\n';
  }
  out << "===========================================================\n";
}

json comparison_json(const std::vector<Headline>& rows) {
  json j = json::object();
  for (const Headline& h : rows) {
    const double r = h.ratio();
    j[h.name] = {{"first", h.first},
                 {"second", h.second},
                 {"ratio", std::isnan(r) ? json(nullptr) : json(r)}};
  }
  return j;
}

}  // namespace lightserve::loadtest
