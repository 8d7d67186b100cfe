// `lightserve-loadtest`: drives a running server (lightserve, vLLM, llama.cpp's llama-server, any
// OpenAI-compatible HTTP server, or lightserve's gRPC API) with a load and reports what
// `vllm bench serve` reports. docs/loadtest.md explains every option and number.
//
// Exit status: 0 every measured request succeeded; 1 the target cannot be used (nothing
// listening, not an OpenAI / lightserve server, unauthorized); 2 invalid options; 3 the run
// ended but some requests failed (the report says why). A --sweep-rates run ends 0 once every
// point ran (failures count against a point's SLOs instead).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "loadtest/dataset.h"
#include "loadtest/grpc_client.h"
#include "loadtest/http_client.h"
#include "loadtest/metrics_scraper.h"
#include "loadtest/report.h"
#include "loadtest/runner.h"
#include "loadtest/sweep.h"

namespace lt = lightserve::loadtest;
using json = nlohmann::json;

namespace {

struct Options {
  std::string url = "http://127.0.0.1:8080";
  std::string protocol = "http";
  std::string endpoint = "completions";
  std::string grpc_target = "127.0.0.1:50051";
  std::string model;
  std::string api_key;
  std::string dataset = "random";
  std::string dataset_path;
  int input_len = -1;
  int output_len = -1;
  double range_ratio = 0.0;
  int turns = 3;
  double tokens_per_word = 0;  // 0: measure with the server's /tokenize, else 1
  int concurrency = 1;
  double request_rate = std::numeric_limits<double>::infinity();
  double burstiness = 1.0;
  int max_concurrency = 0;
  int64_t num_requests = 0;
  double duration = 0;
  int64_t warmup = 0;
  uint64_t seed = 0;
  double temperature = 0.0;
  bool no_ignore_eos = false;
  double timeout = 600;
  std::vector<std::string> goodput;
  int devices = 0;  // 0: GetServerInfo's num_devices, else 1
  double metrics_interval = 1.0;
  std::string json_path;
  bool quiet = false;
  std::string sweep_rates;     // "" none, "auto", or "R1,R2,..."
  double slo_fraction = 0.9;   // sweep: share of requests that must meet the SLOs
  int sweep_bisect_steps = 3;  // auto: midpoints tried after the first miss
  int sweep_max_points = 12;   // auto: points at most
  std::string compare_url;
  std::string compare_grpc_target;
};

int fail(int code, const std::string& message) {
  std::cerr << "lightserve-loadtest: error: " << message << '\n';
  return code;
}

// A word sample's token count on the server (POST /tokenize, as lightserve and vLLM answer it),
// per word; 0 when the server has no such endpoint.
double measure_tokens_per_word(const lt::HttpTarget& target, const std::string& model,
                               const std::string& api_key, const lt::Dataset& dataset) {
  lt::SessionPlan plan = dataset.session(-1);
  const std::string& sample = plan.prompts.at(0);
  const size_t num_words = static_cast<size_t>(std::count(sample.begin(), sample.end(), ' ')) + 1;
  const json body = {{"model", model}, {"prompt", sample}, {"add_special_tokens", false}};
  lt::HttpReply reply =
      lt::http_fetch_blocking(target, "/tokenize", body.dump(), true, api_key, 10);
  if (reply.status != 200) {
    // llama.cpp's llama-server names the text `content`.
    const json llamacpp = {{"content", sample}, {"add_special", false}};
    reply = lt::http_fetch_blocking(target, "/tokenize", llamacpp.dump(), true, api_key, 10);
  }
  if (reply.status != 200) return 0;
  const json j = json::parse(reply.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return 0;
  size_t num_tokens = 0;
  if (j.contains("count") && j["count"].is_number_integer()) {
    num_tokens = j["count"].get<size_t>();
  } else if (j.contains("tokens") && j["tokens"].is_array()) {
    num_tokens = j["tokens"].size();
  }
  if (num_tokens == 0 || num_words == 0) return 0;
  return static_cast<double>(num_tokens) / static_cast<double>(num_words);
}

std::string describe_load(const lt::LoadConfig& load) {
  std::string s;
  char buf[160];
  if (std::isfinite(load.request_rate)) {
    std::snprintf(buf, sizeof buf, "open loop, %.3g req/s, burstiness %.3g", load.request_rate,
                  load.burstiness);
    s = buf;
    if (load.max_concurrency > 0) {
      s.append(", max concurrency ");
      s.append(std::to_string(load.max_concurrency));
    }
  } else {
    s = "closed loop, concurrency ";
    s.append(std::to_string(load.concurrency));
  }
  if (load.num_requests > 0) {
    s.append(", ");
    s.append(std::to_string(load.num_requests));
    s.append(" requests");
  }
  if (load.duration_s > 0) {
    std::snprintf(buf, sizeof buf, ", %.3g s", load.duration_s);
    s.append(buf);
  }
  return s;
}

// One server under test: where it is, how we speak to it, the model it serves.
struct Target {
  std::string label;  // for the tables: the URL or the gRPC target
  bool grpc = false;
  lt::HttpTarget http;       // the OpenAI API (HTTP) or only /metrics and /tokenize (gRPC)
  bool http_usable = false;  // HTTP, or gRPC with its --url / --compare given
  std::string grpc_target;
  std::string model;  // sent with each request
  std::unique_ptr<lt::GrpcClient> grpc_client;
  std::unique_ptr<lt::Client> http_client;
  std::optional<lt::HttpTarget> metrics_target;  // /metrics answered there
  int devices = 1;                               // for the throughput per device
  std::string devices_source = "assumed";        // "--devices", "GetServerInfo" or "assumed"
};

// Is the target a server we can drive? A clear error (exit 1) before any load; 0 when it is.
int connect(Target& t, const Options& o, lt::GenerationSettings settings) {
  if (t.grpc) {
    t.grpc_client = std::make_unique<lt::GrpcClient>(t.grpc_target, settings);
    auto name = t.grpc_client->model_name(10);
    if (!name) {
      return fail(1, "gRPC target " + t.grpc_target +
                         " does not answer as a lightserve server: " + name.error().message);
    }
    if (t.model.empty()) t.model = name.value();
    return 0;
  }
  const lt::HttpReply models =
      lt::http_fetch_blocking(t.http, "/v1/models", "", false, o.api_key, 10);
  if (models.status == 0)
    return fail(1, "cannot reach " + t.http.url() + ": " + models.error_detail);
  if (models.status == 401 || models.status == 403) {
    return fail(1, "GET " + t.http.url() + "/v1/models answered " + std::to_string(models.status) +
                       ": a wrong or missing --api-key");
  }
  const json j = json::parse(models.body, nullptr, false);
  const bool openai =
      models.status == 200 && j.is_object() && j.contains("data") && j["data"].is_array();
  if (!openai) {
    return fail(1, t.http.url() +
                       " is not an OpenAI-compatible server: GET /v1/models "
                       "answered " +
                       std::to_string(models.status) + " " + models.body.substr(0, 200));
  }
  if (t.model.empty()) {
    if (j["data"].empty() || !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
      return fail(1, "GET " + t.http.url() + "/v1/models lists no model; name one with --model");
    }
    t.model = j["data"][0]["id"].get<std::string>();
  }
  return 0;
}

// The devices `t` runs on: --devices, else GetServerInfo's num_devices from its gRPC server (the
// target itself with gRPC; with HTTP, `grpc_target` when --grpc-target was given), else 1 (with
// a note on stderr).
void find_devices(Target& t, const Options& o, const std::string& grpc_target,
                  const lt::GenerationSettings& settings) {
  if (o.devices > 0) {
    t.devices = o.devices;
    t.devices_source = "--devices";
    return;
  }
  std::string why = "no gRPC server to ask (--grpc-target)";
  if (t.grpc || !grpc_target.empty()) {
    std::unique_ptr<lt::GrpcClient> own;
    lt::GrpcClient* client = t.grpc_client.get();
    if (client == nullptr) {
      own = std::make_unique<lt::GrpcClient>(grpc_target, settings);
      client = own.get();
    }
    const auto n = client->num_devices(10);
    if (n && n.value() > 0) {
      t.devices = n.value();
      t.devices_source = "GetServerInfo";
      return;
    }
    why = n ? "its GetServerInfo has no num_devices" : n.error().message;
  }
  t.devices = 1;
  t.devices_source = "assumed";
  if (!o.quiet) {
    std::cerr << "lightserve-loadtest: " << t.label << ": 1 device assumed for the per-device "
              << "throughput (" << why << "; --devices N to say)\n";
  }
}

// Looks for /metrics on the target (warns once when there is none).
void find_metrics(Target& t, const Options& o) {
  if (o.metrics_interval <= 0 || !t.http_usable) return;
  std::string error;
  const auto values = lt::scrape_once(t.http, o.api_key, &error);
  if (values.empty() && !o.quiet) {
    std::cerr << "lightserve-loadtest: no /metrics at " << t.http.url()
              << (error.empty() ? " (none of the known names)" : ": " + error)
              << "; server metrics are left out\n";
  }
  if (!values.empty()) t.metrics_target = t.http;
}

// One load point against one target: its summary, records, metric series and --json document.
struct Point {
  lt::RunInfo info;
  lt::Summary summary;
  std::vector<lt::RequestRecord> records;
  lt::MetricsSeries metrics;
  json document() const { return lt::to_json(info, summary, records, metrics); }
};

// Everything one target is measured with (the same for the --compare target).
struct Plan {
  const Options* o = nullptr;
  const lt::Dataset* dataset = nullptr;
  std::string dataset_text;
  lt::Slo slo;
  lt::LoadConfig load;
  std::vector<double> sweep_rates;  // explicit --sweep-rates
  bool auto_sweep = false;
  bool sweep = false;
};

json config_json(const Options& o, const Target& t, const Plan& plan, double request_rate) {
  return {{"protocol", t.grpc ? "grpc" : (o.endpoint == "chat" ? "http-chat" : "http-completions")},
          {"url", t.http.url()},
          {"grpc_target", t.grpc_target},
          {"model", t.model},
          {"dataset", o.dataset},
          {"dataset_path", o.dataset_path},
          {"input_len", plan.dataset->input_len()},
          {"output_len", plan.dataset->output_len()},
          {"range_ratio", o.range_ratio},
          {"turns", o.turns},
          {"tokens_per_word", plan.dataset->config().tokens_per_word},
          {"concurrency", o.concurrency},
          {"request_rate", std::isfinite(request_rate) ? json(request_rate) : json("inf")},
          {"burstiness", o.burstiness},
          {"max_concurrency", o.max_concurrency},
          {"num_requests", o.num_requests},
          {"duration", o.duration},
          {"warmup", o.warmup},
          {"seed", o.seed},
          {"temperature", o.temperature},
          {"ignore_eos", !o.no_ignore_eos},
          {"timeout", o.timeout},
          {"goodput", o.goodput},
          {"devices", t.devices},
          {"devices_source", t.devices_source},
          {"metrics_interval", o.metrics_interval},
          {"sweep_rates", o.sweep_rates},
          {"slo_fraction", o.slo_fraction},
          {"compare_url", o.compare_url},
          {"compare_grpc_target", o.compare_grpc_target}};
}

// Runs the warm-up (when asked), then one point or the sweep's points, against `t`.
std::vector<Point> measure(boost::asio::io_context& io, Target& t, const Plan& plan) {
  const Options& o = *plan.o;
  lt::Client* client = t.grpc ? static_cast<lt::Client*>(t.grpc_client.get()) : t.http_client.get();
  lt::RunnerOptions runner_options;
  runner_options.progress = !o.quiet;
  runner_options.api_key = o.api_key;
  runner_options.metrics_interval_s = o.metrics_interval;
  runner_options.metrics_target = t.metrics_target;

  std::vector<lt::RequestRecord> warmup_records;
  if (o.warmup > 0) {
    lt::LoadConfig warm = plan.load;
    warm.request_rate = std::numeric_limits<double>::infinity();
    warm.concurrency = std::max(o.concurrency, o.max_concurrency);
    warm.num_requests = o.warmup;
    warm.duration_s = 0;
    warm.first_session = int64_t{1} << 40;
    warm.warmup = true;
    lt::RunnerOptions warm_options = runner_options;
    warm_options.metrics_target.reset();
    lt::RunOutcome w = lt::run_load(io, *client, *plan.dataset, warm, warm_options);
    warmup_records = std::move(w.records);
  }

  const auto run_point = [&](double request_rate) {
    Point p;
    lt::LoadConfig load = plan.load;
    load.request_rate = request_rate;
    p.info.target = t.label;
    p.info.protocol = t.grpc ? "grpc" : (o.endpoint == "chat" ? "http-chat" : "http-completions");
    p.info.model = t.model;
    p.info.dataset = plan.dataset_text;
    p.info.load = describe_load(load);
    p.info.config = config_json(o, t, plan, request_rate);
    if (!o.quiet) {
      std::cerr << "lightserve-loadtest: " << p.info.target << " (" << p.info.protocol
                << "), model " << p.info.model << "; " << p.info.dataset << "; " << p.info.load
                << '\n';
    }
    std::map<std::string, double> before;
    if (runner_options.metrics_target) before = lt::scrape_once(t.http, o.api_key, nullptr);
    lt::RunOutcome run = lt::run_load(io, *client, *plan.dataset, load, runner_options);
    run.metrics.counters_before = std::move(before);
    if (runner_options.metrics_target) {
      run.metrics.counters_after = lt::scrape_once(t.http, o.api_key, nullptr);
    }
    p.records = warmup_records;  // each point's document carries the warm-up's records
    for (auto& r : run.records) p.records.push_back(std::move(r));
    p.metrics = std::move(run.metrics);
    p.summary = lt::summarize(p.records, run.duration_s, run.peak_concurrency, t.devices, plan.slo,
                              p.metrics);
    return p;
  };

  std::vector<Point> points;
  if (!plan.sweep) {
    points.push_back(run_point(plan.load.request_rate));
  } else if (!plan.auto_sweep) {
    for (double rate : plan.sweep_rates) points.push_back(run_point(rate));
  } else {
    const double start = std::isfinite(o.request_rate) ? o.request_rate : 1.0;
    lt::RateSearch search(start, o.sweep_bisect_steps, o.sweep_max_points);
    while (const std::optional<double> rate = search.next()) {
      points.push_back(run_point(*rate));
      const bool passed = lt::meets_slo(points.back().summary, o.slo_fraction);
      search.record(*rate, passed);
      if (!o.quiet) {
        std::cerr << "lightserve-loadtest: " << *rate
                  << " req/s: " << (passed ? "meets the SLOs" : "misses the SLOs") << '\n';
      }
    }
  }
  return points;
}

std::string slo_rule(const Options& o, const lt::Slo& slo) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g%%", o.slo_fraction * 100);
  std::string rule = "at least ";
  rule.append(buf);
  rule.append(" of the requests (failures count as misses) ");
  if (!slo.any()) return rule + "succeed (no --goodput given)";
  rule.append("meet");
  for (const std::string& item : o.goodput) rule.append(" " + item);
  return rule + " (ms)";
}

std::vector<lt::SweepPoint> sweep_points(const std::vector<Point>& points, double slo_fraction) {
  std::vector<lt::SweepPoint> out;
  for (const Point& p : points) {
    lt::SweepPoint s;
    s.request_rate = p.info.config["request_rate"].is_number()
                         ? p.info.config["request_rate"].get<double>()
                         : std::numeric_limits<double>::infinity();
    s.summary = p.summary;
    s.good_fraction = lt::good_fraction(p.summary);
    s.meets_slo = lt::meets_slo(p.summary, slo_fraction);
    s.report = p.document();
    out.push_back(std::move(s));
  }
  return out;
}

// Prints a target's result and returns its --json document.
json report(const Target& t, const Plan& plan, const std::vector<Point>& points) {
  const Options& o = *plan.o;
  if (!plan.sweep) {
    lt::print_table(std::cout, points.front().info, points.front().summary);
    return points.front().document();
  }
  const std::vector<lt::SweepPoint> sweep = sweep_points(points, o.slo_fraction);
  const std::string rule = slo_rule(o, plan.slo);
  lt::print_sweep_table(std::cout, t.label, sweep, rule, t.devices);
  return {{"target", t.label},
          {"protocol", points.front().info.protocol},
          {"model", t.model},
          {"dataset", plan.dataset_text},
          {"sweep", lt::sweep_json(sweep, rule, o.slo_fraction, t.devices)}};
}

int count_failed(const std::vector<Point>& points) {
  int failed = 0;
  for (const Point& p : points) failed += p.summary.num_failed;
  return failed;
}

void report_first_failure(const std::vector<Point>& points) {
  for (const Point& p : points) {
    for (const auto& r : p.records) {
      if (!r.ok && !r.warmup) {
        std::cerr << "lightserve-loadtest: " << p.summary.num_failed << " request(s) failed at "
                  << p.info.target << "; first: " << r.error_reason << ": " << r.error_detail
                  << '\n';
        return;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "lightserve-loadtest: load generator for lightserve and any OpenAI-compatible server "
      "(vLLM, llama.cpp's llama-server). Streams every request (HTTP SSE or gRPC "
      "GenerateStream), measures TTFT, TPOT, ITL and end-to-end latency per request, scrapes "
      "/metrics while it runs, and prints a table like `vllm bench serve` (docs/loadtest.md).\n"
      "Exit status: 0 all requests succeeded, 1 unusable target, 2 invalid options, 3 some "
      "requests failed (a --sweep-rates run: 0 once every point ran)."};
  app.option_defaults()->always_capture_default();
  app.add_option("--url", o.url,
                 "HTTP server root (OpenAI API at /v1/..., /metrics); with --protocol grpc only "
                 "used for /metrics and /tokenize");
  app.add_option("--protocol", o.protocol, "http (OpenAI API, SSE) or grpc (lightserve.v1)")
      ->check(CLI::IsMember({"http", "grpc"}));
  app.add_option("--endpoint", o.endpoint,
                 "HTTP: completions (/v1/completions) or chat (/v1/chat/completions)")
      ->check(CLI::IsMember({"completions", "chat"}));
  app.add_option("--grpc-target", o.grpc_target, "gRPC host:port");
  app.add_option("--model", o.model,
                 "Model name sent with each request; default: the first of GET /v1/models (HTTP), "
                 "the served model (gRPC)");
  app.add_option("--api-key", o.api_key, "Bearer key (default: $OPENAI_API_KEY when set)");
  app.add_option("--dataset", o.dataset,
                 "random | file | reasoning (512 in, 7500 out) | rag (7936 in, 256 out) | chat "
                 "(multi-turn) | jsonl ({\"prompt\", \"output_len\"} per line)")
      ->check(CLI::IsMember({"random", "file", "reasoning", "rag", "chat", "jsonl"}));
  app.add_option("--dataset-path", o.dataset_path,
                 "Text file (file; optional for reasoning, rag, chat) or JSONL file (jsonl)");
  app.add_option("--input-len", o.input_len,
                 "Prompt tokens (approximate, see --tokens-per-word); -1: the dataset's default "
                 "(random/file 1024, reasoning 512, rag 7936, chat 128 per turn)");
  app.add_option("--output-len", o.output_len,
                 "max_tokens per request; -1: the dataset's default (random/file 128, reasoning "
                 "7500, rag 256, chat 64)");
  app.add_option("--range-ratio", o.range_ratio, "Lengths uniform in [len*(1-r), len*(1+r)]")
      ->check(CLI::Range(0.0, 0.999));
  app.add_option("--turns", o.turns, "chat: user turns per conversation")
      ->check(CLI::PositiveNumber);
  app.add_option("--tokens-per-word", o.tokens_per_word,
                 "Tokens one prompt word makes on the server; 0: measured with its /tokenize "
                 "(else 1)");
  app.add_option("--concurrency", o.concurrency,
                 "Closed loop: requests in flight (each user sends again when answered)")
      ->check(CLI::PositiveNumber);
  app.add_option("--request-rate", o.request_rate,
                 "Open loop: mean arrivals per second (gamma-distributed gaps); inf: closed loop");
  app.add_option("--burstiness", o.burstiness,
                 "Open loop: shape of the gamma gaps; 1 = Poisson, < 1 burstier, > 1 steadier")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-concurrency", o.max_concurrency,
                 "Open loop: requests in flight at most (later arrivals wait); 0 = no cap");
  app.add_option("--num-requests", o.num_requests,
                 "Measured requests (chat: turns); 0 with --duration: until the time is up");
  app.add_option("--duration", o.duration,
                 "Seconds to send new requests for (those in flight then finish)");
  app.add_option("--warmup", o.warmup, "Requests sent first and left out of every number");
  app.add_option("--seed", o.seed, "Seed of the prompts, lengths and arrivals");
  app.add_option("--temperature", o.temperature, "Sampling temperature (0: greedy)");
  app.add_flag("--no-ignore-eos", o.no_ignore_eos,
               "Let the model stop at EOS (default sends ignore_eos and min_tokens = max_tokens)");
  app.add_option("--timeout", o.timeout, "Seconds one request may take, connect to last byte")
      ->check(CLI::PositiveNumber);
  app.add_option("--goodput", o.goodput,
                 "SLOs in ms, e.g. --goodput ttft:500 tpot:50 e2el:10000: goodput counts the "
                 "requests meeting all given");
  app.add_option("--devices", o.devices,
                 "Devices the server uses, for throughput per device; 0: GetServerInfo's "
                 "num_devices (gRPC: the target; HTTP: --grpc-target when given), else 1")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--metrics-interval", o.metrics_interval,
                 "Seconds between /metrics scrapes; 0: no scraping");
  app.add_option("--json", o.json_path,
                 "Write every number, per-request records and the metric "
                 "series to this file");
  app.add_flag("--quiet,-q", o.quiet, "No progress line on stderr");
  app.add_option("--sweep-rates", o.sweep_rates,
                 "Run the load (open loop) at each request rate, e.g. 0.5,1,2, or 'auto' (from "
                 "--request-rate or 1 req/s, doubling while the SLOs hold, then bisecting); "
                 "reports each point and the highest rate meeting the SLOs (capacity)");
  app.add_option("--slo-fraction", o.slo_fraction,
                 "Sweep: a rate meets the SLOs when at least this share of its requests meets "
                 "every --goodput SLO (failed requests count as misses; without --goodput: "
                 "succeed)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--sweep-bisect-steps", o.sweep_bisect_steps,
                 "Sweep auto: midpoints tried between the highest passing and lowest failing rate")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--sweep-max-points", o.sweep_max_points, "Sweep auto: load points at most")
      ->check(CLI::PositiveNumber);
  app.add_option("--compare", o.compare_url,
                 "Run the same load (same seed) against this second server root right after the "
                 "first and print both results and the ratios second / first (with --protocol "
                 "grpc: its /metrics root)");
  app.add_option("--compare-grpc-target", o.compare_grpc_target,
                 "With --protocol grpc: the second gRPC host:port to compare against");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  if (o.num_requests <= 0 && o.duration <= 0) o.num_requests = 100;
  if (o.num_requests < 0 || o.duration < 0 || o.warmup < 0 || o.max_concurrency < 0 ||
      o.metrics_interval < 0 || !(o.request_rate > 0)) {
    return fail(2,
                "--num-requests, --duration, --warmup, --max-concurrency and "
                "--metrics-interval must not be negative; --request-rate must be positive");
  }
  if (o.api_key.empty()) {
    if (const char* key = std::getenv("OPENAI_API_KEY")) o.api_key = key;
  }
  auto slo = lt::parse_slo(o.goodput);
  if (!slo) return fail(2, slo.error().message);
  Plan plan;
  plan.o = &o;
  plan.slo = slo.value();
  if (!o.sweep_rates.empty()) {
    auto spec = lt::parse_sweep_rates(o.sweep_rates);
    if (!spec) return fail(2, spec.error().message);
    plan.sweep = true;
    plan.auto_sweep = spec->automatic;
    plan.sweep_rates = spec->rates;
  }
  const bool grpc = o.protocol == "grpc";
  const bool compare = !o.compare_url.empty() || !o.compare_grpc_target.empty();
  if (compare && grpc && o.compare_grpc_target.empty()) {
    return fail(2, "with --protocol grpc, --compare-grpc-target names the second server");
  }
  if (compare && !grpc && o.compare_url.empty()) {
    return fail(2, "--compare-grpc-target needs --protocol grpc (HTTP: --compare URL)");
  }
  if (o.dataset == "chat") o.endpoint = "chat";

  Target first;
  first.grpc = grpc;
  first.grpc_target = o.grpc_target;
  first.model = o.model;
  auto first_http = lt::parse_http_url(o.url);
  if (!first_http) return fail(2, first_http.error().message);
  first.http = first_http.value();
  first.http_usable = !grpc || app.count("--url") > 0;
  first.label = grpc ? o.grpc_target : first.http.url();
  Target second;
  if (compare) {
    second.grpc = grpc;
    second.grpc_target = o.compare_grpc_target;
    second.model = o.model;
    auto second_http = lt::parse_http_url(o.compare_url.empty() ? o.url : o.compare_url);
    if (!second_http) return fail(2, second_http.error().message);
    second.http = second_http.value();
    second.http_usable = !grpc || !o.compare_url.empty();
    second.label = grpc ? o.compare_grpc_target : second.http.url();
  }

  lt::GenerationSettings settings;
  settings.model = o.model;
  settings.temperature = o.temperature;
  settings.ignore_eos = !o.no_ignore_eos;
  settings.timeout_seconds = o.timeout;
  settings.api_key = o.api_key;
  // Both targets are checked before any load: a bad second target is found at once.
  if (const int code = connect(first, o, settings)) return code;
  if (compare) {
    if (const int code = connect(second, o, settings)) return code;
  }
  find_devices(first, o, grpc || app.count("--grpc-target") > 0 ? o.grpc_target : "", settings);
  if (compare) find_devices(second, o, grpc ? o.compare_grpc_target : "", settings);

  lt::DatasetConfig dc;
  auto kind = lt::parse_dataset_kind(o.dataset);
  if (!kind) return fail(2, kind.error().message);
  dc.kind = kind.value();
  dc.path = o.dataset_path;
  dc.input_len = o.input_len;
  dc.output_len = o.output_len;
  dc.range_ratio = o.range_ratio;
  dc.turns = o.turns;
  dc.seed = o.seed;
  auto dataset = lt::Dataset::create(dc);
  if (!dataset) return fail(2, dataset.error().message);
  // Measured on the first target only: the second gets exactly the same prompts.
  if (o.tokens_per_word > 0) {
    dc.tokens_per_word = o.tokens_per_word;
  } else if (dc.kind != lt::DatasetKind::kJsonl && first.http_usable) {
    const double measured =
        measure_tokens_per_word(first.http, first.model, o.api_key, dataset.value());
    if (measured > 0) dc.tokens_per_word = measured;
  }
  dataset = lt::Dataset::create(dc);
  if (!dataset) return fail(2, dataset.error().message);
  plan.dataset = &dataset.value();
  char dataset_text[200];
  std::snprintf(dataset_text, sizeof dataset_text,
                "%s, input %d, output %d tokens, range ratio %.2g, %.3g tokens/word",
                o.dataset.c_str(), dataset->input_len(), dataset->output_len(), o.range_ratio,
                dc.tokens_per_word);
  plan.dataset_text = dataset_text;
  if (dataset->is_chat()) plan.dataset_text.append(", " + std::to_string(o.turns) + " turns");

  plan.load.concurrency = o.concurrency;
  plan.load.request_rate = o.request_rate;
  plan.load.burstiness = o.burstiness;
  plan.load.max_concurrency = o.max_concurrency;
  plan.load.num_requests = o.num_requests;
  plan.load.duration_s = o.duration;
  plan.load.seed = o.seed;

  boost::asio::io_context io;
  const auto make_http_client = [&](Target& t) {
    if (t.grpc) return;
    lt::GenerationSettings s = settings;
    s.model = t.model;
    t.http_client = std::make_unique<lt::OpenAiClient>(io, t.http,
                                                       o.endpoint == "chat"
                                                           ? lt::OpenAiEndpoint::kChatCompletions
                                                           : lt::OpenAiEndpoint::kCompletions,
                                                       s);
  };
  make_http_client(first);
  find_metrics(first, o);
  const std::vector<Point> first_points = measure(io, first, plan);
  std::vector<Point> second_points;
  if (compare) {
    make_http_client(second);
    find_metrics(second, o);
    second_points = measure(io, second, plan);
  }

  json document = report(first, plan, first_points);
  if (compare) {
    std::cout << '\n';
    json second_document = report(second, plan, second_points);
    std::vector<lt::Headline> rows;
    if (!plan.sweep) {
      rows = lt::headline_ratios(first_points.front().summary, second_points.front().summary);
    } else {
      const auto cap = [&](const std::vector<Point>& points) {
        return lt::capacity(sweep_points(points, o.slo_fraction)).value_or(0.0);
      };
      rows.push_back({"Capacity (req/s)", cap(first_points), cap(second_points)});
      // Explicit rates: the same points on both, so each rate's throughput and latency too.
      if (!plan.auto_sweep) {
        for (size_t i = 0; i < first_points.size() && i < second_points.size(); ++i) {
          char name[64];
          std::snprintf(name, sizeof name, "@%g req/s ", plan.sweep_rates[i]);
          for (lt::Headline h :
               lt::headline_ratios(first_points[i].summary, second_points[i].summary)) {
            if (h.name.rfind("Output", 0) == 0 || h.name.rfind("Median T", 0) == 0 ||
                h.name.rfind("P99 TTFT", 0) == 0) {
              h.name = name + h.name;
              rows.push_back(std::move(h));
            }
          }
        }
      }
    }
    std::cout << '\n';
    lt::print_comparison(std::cout, first.label, second.label, rows);
    document = {{"runs", {std::move(document), std::move(second_document)}},
                {"comparison", lt::comparison_json(rows)}};
  }
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << document.dump(1) << '\n';
    if (!out) return fail(1, "cannot write --json " + o.json_path);
  }
  const int failed = count_failed(first_points) + count_failed(second_points);
  if (failed > 0 && !plan.sweep) {
    report_first_failure(first_points);
    report_first_failure(second_points);
    return 3;
  }
  return 0;
}
