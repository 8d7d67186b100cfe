// Capacity search and back-to-back comparison (docs/loadtest.md "Rate sweeps" and "Comparing two
// targets"): the rule that says whether one load point meets the SLOs, the sequence of request
// rates `--sweep-rates auto` tries (doubling, then bisecting), the sweep table, and the ratios
// of two runs' headline numbers.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "base/status.h"
#include "loadtest/report.h"

namespace lightserve::loadtest {

// "1,2,4" -> {1, 2, 4}; "auto" -> empty with `automatic` set. Rates must be positive and finite.
struct SweepSpec {
  bool automatic = false;
  std::vector<double> rates;
};
Result<SweepSpec> parse_sweep_rates(const std::string& text);

// A point meets the SLOs when the fraction of its measured requests (failed ones included, as
// misses) that meet every --goodput SLO is at least `slo_fraction`. Without --goodput the SLO is
// only "succeeded": the fraction of requests that succeeded.
double good_fraction(const Summary& summary);
bool meets_slo(const Summary& summary, double slo_fraction);

// The rates `--sweep-rates auto` tries: `start`, doubled while the points meet the SLOs; then,
// once one fails, `bisect_steps` midpoints between the highest passing and lowest failing rate.
// When the first rate fails it halves instead until one passes. At most `max_points` points.
class RateSearch {
 public:
  RateSearch(double start, int bisect_steps, int max_points);
  // The next rate to run, or nothing when the search is over.
  std::optional<double> next() const;
  void record(double rate, bool passed);
  std::optional<double> highest_passing() const { return lo_; }
  std::optional<double> lowest_failing() const { return hi_; }

 private:
  double start_;
  int bisect_steps_;
  int max_points_;
  int num_points_ = 0;
  int num_bisections_ = 0;
  std::optional<double> last_;
  std::optional<double> lo_;  // highest rate that met the SLOs
  std::optional<double> hi_;  // lowest rate that did not
};

struct SweepPoint {
  double request_rate = 0;
  Summary summary;
  double good_fraction = 0;
  bool meets_slo = false;
  nlohmann::json report;  // the point's full --json document (records, metrics)
};

// The highest rate whose point met the SLOs (explicit rates: the highest passing one, even if a
// lower one failed, which the table shows); nothing when none did.
std::optional<double> capacity(const std::vector<SweepPoint>& points);

void print_sweep_table(std::ostream& out, const std::string& target,
                       const std::vector<SweepPoint>& points, const std::string& rule, int devices);
nlohmann::json sweep_json(const std::vector<SweepPoint>& points, const std::string& rule,
                          double slo_fraction, int devices);

// Headline numbers of two runs and second / first. Throughputs: higher is better; latencies:
// lower is better (the ratio is still second / first).
struct Headline {
  std::string name;
  double first = 0;
  double second = 0;
  double ratio() const;  // second / first; NaN when first is 0
};
std::vector<Headline> headline_ratios(const Summary& first, const Summary& second);
void print_comparison(std::ostream& out, const std::string& first_target,
                      const std::string& second_target, const std::vector<Headline>& rows);
nlohmann::json comparison_json(const std::vector<Headline>& rows);

}  // namespace lightserve::loadtest
