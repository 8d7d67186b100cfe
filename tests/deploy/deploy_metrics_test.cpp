// Every metric the deployment files name is one the real daemon exports (issue 13): the Grafana
// dashboard, the alert rules, the HPA and its prometheus-adapter rule, the KEDA ScaledObject and
// the InferencePool's endpoint picker, scanned for `lightserve_*` names and checked against a
// scrape of a running `lightserve serve`. A renamed metric in serving/metrics.cpp fails here
// instead of leaving an empty panel, an alert that never fires or an HPA with no metric.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"
#include "tests/support/http_test_client.h"

namespace lightserve::testing {
namespace {

namespace fs = std::filesystem;

const fs::path kSource = LIGHTSERVE_SOURCE_DIR;

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), {}};
}

// `lightserve_...` names in a text (metric names are lower-case; env names like
// LIGHTSERVE_API_KEY are not matched).
std::set<std::string> names_in(const std::string& text) {
  static const std::regex kName("lightserve_[a-z0-9_]*[a-z0-9]");
  std::set<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kName);
       it != std::sregex_iterator(); ++it) {
    out.insert(it->str());
  }
  return out;
}

// Sample names (before `{` or the space) and family names (# TYPE) of a Prometheus text scrape.
struct Scrape {
  std::set<std::string> samples;
  std::set<std::string> families;
};

Scrape parse_scrape(const std::string& text) {
  Scrape s;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream words(line.substr(7));
      std::string name;
      words >> name;
      s.families.insert(name);
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    s.samples.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return s;
}

class DeployMetrics : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(LIGHTSERVE_TEST_MODEL)) return;
    DaemonProcess daemon = DaemonProcess::start(
        {"--model", LIGHTSERVE_TEST_MODEL, "--kv-budget", "64MiB", "--context", "512"});
    if (!daemon.ok()) {
      error_ = daemon.error();
      return;
    }
    // One finished request, so every histogram and counter has moved (they are exported from
    // the start anyway; this also shows the scrape after real work).
    const HttpResponse done = HttpConnection(daemon.http_port(), 60)
                                  .request("POST", "/v1/completions",
                                           R"({"prompt": "The capital of France is",)"
                                           R"( "max_tokens": 4, "temperature": 0})",
                                           {{"Content-Type", "application/json"}});
    if (done.status != 200) error_ = "completion failed: " + std::to_string(done.status);
    text_ = HttpConnection(daemon.http_port(), 30).request("GET", "/metrics").body;
    scrape_ = parse_scrape(text_);
    const int rc = daemon.stop(SIGTERM);
    if (rc != 0) error_ += " daemon exit " + std::to_string(rc) + ": " + daemon.stderr_text();
  }

  void SetUp() override {
    if (!fs::exists(LIGHTSERVE_TEST_MODEL)) {
      GTEST_SKIP() << "model file absent: " << LIGHTSERVE_TEST_MODEL;
    }
    ASSERT_TRUE(error_.empty()) << error_;
    ASSERT_FALSE(scrape_.families.empty()) << "empty scrape:\n" << text_;
  }

  // Names the file uses that the daemon does not export.
  static std::vector<std::string> unknown_in(const std::string& text) {
    std::vector<std::string> out;
    for (const std::string& n : names_in(text)) {
      if (scrape_.samples.count(n) == 0 && scrape_.families.count(n) == 0) out.push_back(n);
    }
    return out;
  }

  static inline std::string error_;
  static inline std::string text_;
  static inline Scrape scrape_;
};

// The files that name metrics, each with what it must at least name.
struct Consumer {
  const char* path;
  std::vector<std::string> must_name;
};

const std::vector<Consumer>& consumers() {
  static const std::vector<Consumer> c = {
      {"deploy/kubernetes/components/monitoring/lightserve-dashboard.json", {}},
      {"deploy/kubernetes/components/monitoring/prometheusrule.yaml",
       {"lightserve_num_requests_waiting", "lightserve_kv_cache_usage_perc",
        "lightserve_request_success_total", "lightserve_generation_tokens_total"}},
      {"deploy/kubernetes/components/hpa/hpa.yaml", {"lightserve_num_requests_waiting"}},
      {"deploy/kubernetes/prometheus-adapter/values.yaml", {"lightserve_num_requests_waiting"}},
      {"deploy/kubernetes/components/keda/scaledobject.yaml", {"lightserve_num_requests_waiting"}},
      {"deploy/kubernetes/components/inference-pool/epp.yaml",
       {"lightserve_num_requests_waiting", "lightserve_kv_cache_usage_perc"}},
  };
  return c;
}

TEST_F(DeployMetrics, EveryNamedMetricIsExported) {
  for (const Consumer& c : consumers()) {
    SCOPED_TRACE(c.path);
    const std::string text = read_file(kSource / c.path);
    ASSERT_FALSE(text.empty()) << "missing or empty";
    const std::set<std::string> named = names_in(text);
    EXPECT_FALSE(named.empty()) << "names no lightserve_ metric";
    EXPECT_EQ(unknown_in(text), std::vector<std::string>{}) << "not in the daemon's /metrics";
    for (const std::string& m : c.must_name) EXPECT_EQ(named.count(m), 1u) << m;
  }
}

// Anywhere under deploy/ and in docs/deploying.md: no stale metric name in a comment or doc.
TEST_F(DeployMetrics, NoUnknownMetricAnywhereInDeploy) {
  std::vector<fs::path> files = {kSource / "docs/deploying.md"};
  for (const auto& e : fs::recursive_directory_iterator(kSource / "deploy")) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    EXPECT_EQ(unknown_in(read_file(f)), std::vector<std::string>{});
  }
}

// The dashboard shows every family the daemon exports (a new metric needs a panel).
TEST_F(DeployMetrics, DashboardCoversEveryFamily) {
  const std::set<std::string> named = names_in(
      read_file(kSource / "deploy/kubernetes/components/monitoring/lightserve-dashboard.json"));
  for (const std::string& family : scrape_.families) {
    if (family.rfind("lightserve_", 0) != 0) continue;
    bool shown = named.count(family) > 0;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      shown |= named.count(family + suffix) > 0;
    EXPECT_TRUE(shown) << family << " has no panel";
  }
}

}  // namespace
}  // namespace lightserve::testing
