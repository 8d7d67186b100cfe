// `lightserve-loadtest`: drives a running server (lightserve, vLLM, llama.cpp's llama-server, any
// OpenAI-compatible HTTP server, or lightserve's gRPC API) with a load and reports what
// `vllm bench serve` reports. docs/loadtest.md explains every option and number.
//
// Exit status: 0 every measured request succeeded; 1 the target cannot be used (nothing
// listening, not an OpenAI / lightserve server, unauthorized); 2 invalid options; 3 the run
// ended but some requests failed (the report says why).
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

#include "loadtest/dataset.h"
#include "loadtest/grpc_client.h"
#include "loadtest/http_client.h"
#include "loadtest/metrics_scraper.h"
#include "loadtest/report.h"
#include "loadtest/runner.h"

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
  int devices = 1;
  double metrics_interval = 1.0;
  std::string json_path;
  bool quiet = false;
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
  const lt::HttpReply reply =
      lt::http_fetch_blocking(target, "/tokenize", body.dump(), true, api_key, 10);
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

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "lightserve-loadtest: load generator for lightserve and any OpenAI-compatible server "
      "(vLLM, llama.cpp's llama-server). Streams every request (HTTP SSE or gRPC "
      "GenerateStream), measures TTFT, TPOT, ITL and end-to-end latency per request, scrapes "
      "/metrics while it runs, and prints a table like `vllm bench serve` (docs/loadtest.md).\n"
      "Exit status: 0 all requests succeeded, 1 unusable target, 2 invalid options, 3 some "
      "requests failed."};
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
  app.add_option("--devices", o.devices, "Devices the server uses, for throughput per device")
      ->check(CLI::PositiveNumber);
  app.add_option("--metrics-interval", o.metrics_interval,
                 "Seconds between /metrics scrapes; 0: no scraping");
  app.add_option("--json", o.json_path,
                 "Write every number, per-request records and the metric "
                 "series to this file");
  app.add_flag("--quiet,-q", o.quiet, "No progress line on stderr");
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
  auto target = lt::parse_http_url(o.url);
  if (!target) return fail(2, target.error().message);
  const bool grpc = o.protocol == "grpc";
  const bool url_given = app.count("--url") > 0;
  if (o.dataset == "chat") o.endpoint = "chat";

  lt::GenerationSettings settings;
  settings.model = o.model;
  settings.temperature = o.temperature;
  settings.ignore_eos = !o.no_ignore_eos;
  settings.timeout_seconds = o.timeout;
  settings.api_key = o.api_key;

  // Is the target a server we can drive? A clear error before any load.
  std::string model_display = o.model;
  std::unique_ptr<lt::GrpcClient> grpc_client;
  if (grpc) {
    grpc_client = std::make_unique<lt::GrpcClient>(o.grpc_target, settings);
    auto name = grpc_client->model_name(10);
    if (!name) {
      return fail(1, "gRPC target " + o.grpc_target +
                         " does not answer as a lightserve server: " + name.error().message);
    }
    if (model_display.empty()) model_display = name.value();
  } else {
    const lt::HttpReply models =
        lt::http_fetch_blocking(target.value(), "/v1/models", "", false, o.api_key, 10);
    if (models.status == 0) {
      return fail(1, "cannot reach " + target->url() + ": " + models.error_detail);
    }
    if (models.status == 401 || models.status == 403) {
      return fail(1, "GET " + target->url() + "/v1/models answered " +
                         std::to_string(models.status) + ": a wrong or missing --api-key");
    }
    const json j = json::parse(models.body, nullptr, false);
    const bool openai =
        models.status == 200 && j.is_object() && j.contains("data") && j["data"].is_array();
    if (!openai) {
      return fail(1, target->url() +
                         " is not an OpenAI-compatible server: GET /v1/models "
                         "answered " +
                         std::to_string(models.status) + " " + models.body.substr(0, 200));
    }
    if (o.model.empty()) {
      if (j["data"].empty() || !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
        return fail(1, "GET /v1/models lists no model; name one with --model");
      }
      o.model = j["data"][0]["id"].get<std::string>();
      settings.model = o.model;
      model_display = o.model;
    }
  }

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
  const bool can_use_http = !grpc || url_given;
  if (o.tokens_per_word > 0) {
    dc.tokens_per_word = o.tokens_per_word;
  } else if (dc.kind != lt::DatasetKind::kJsonl && can_use_http) {
    const double measured =
        measure_tokens_per_word(target.value(), o.model, o.api_key, dataset.value());
    if (measured > 0) dc.tokens_per_word = measured;
  }
  dataset = lt::Dataset::create(dc);
  if (!dataset) return fail(2, dataset.error().message);

  lt::RunnerOptions runner_options;
  runner_options.progress = !o.quiet;
  runner_options.api_key = o.api_key;
  runner_options.metrics_interval_s = o.metrics_interval;
  lt::MetricsSeries before;
  if (o.metrics_interval > 0 && can_use_http) {
    std::string error;
    const auto values = lt::scrape_once(target.value(), o.api_key, &error);
    if (values.empty() && !o.quiet) {
      std::cerr << "lightserve-loadtest: no /metrics at " << target->url()
                << (error.empty() ? " (none of the known names)" : ": " + error)
                << "; server metrics are left out\n";
    }
    if (!values.empty()) runner_options.metrics_target = target.value();
  }

  boost::asio::io_context io;
  std::unique_ptr<lt::Client> http_client;
  lt::Client* client = grpc_client.get();
  if (!grpc) {
    http_client = std::make_unique<lt::OpenAiClient>(io, target.value(),
                                                     o.endpoint == "chat"
                                                         ? lt::OpenAiEndpoint::kChatCompletions
                                                         : lt::OpenAiEndpoint::kCompletions,
                                                     settings);
    client = http_client.get();
  }

  lt::LoadConfig load;
  load.concurrency = o.concurrency;
  load.request_rate = o.request_rate;
  load.burstiness = o.burstiness;
  load.max_concurrency = o.max_concurrency;
  load.num_requests = o.num_requests;
  load.duration_s = o.duration;
  load.seed = o.seed;

  lt::RunInfo info;
  info.target = grpc ? o.grpc_target : target->url();
  info.protocol = grpc ? "grpc" : (o.endpoint == "chat" ? "http-chat" : "http-completions");
  info.model = model_display;
  char dataset_text[200];
  std::snprintf(dataset_text, sizeof dataset_text,
                "%s, input %d, output %d tokens, range ratio %.2g, %.3g tokens/word",
                o.dataset.c_str(), dataset->input_len(), dataset->output_len(), o.range_ratio,
                dc.tokens_per_word);
  info.dataset = dataset_text;
  if (dataset->is_chat()) info.dataset.append(", " + std::to_string(o.turns) + " turns");
  info.load = describe_load(load);
  if (!o.quiet) {
    std::cerr << "lightserve-loadtest: " << info.target << " (" << info.protocol << "), model "
              << info.model << "; " << info.dataset << "; " << info.load << '\n';
  }

  std::vector<lt::RequestRecord> records;
  if (o.warmup > 0) {
    lt::LoadConfig warm = load;
    warm.request_rate = std::numeric_limits<double>::infinity();
    warm.concurrency = std::max(o.concurrency, o.max_concurrency);
    warm.num_requests = o.warmup;
    warm.duration_s = 0;
    warm.first_session = int64_t{1} << 40;
    warm.warmup = true;
    lt::RunnerOptions warm_options = runner_options;
    warm_options.metrics_target.reset();
    lt::RunOutcome w = lt::run_load(io, *client, dataset.value(), warm, warm_options);
    records = std::move(w.records);
  }

  lt::MetricsSeries counters;
  if (runner_options.metrics_target) {
    counters.counters_before = lt::scrape_once(target.value(), o.api_key, nullptr);
  }
  lt::RunOutcome run = lt::run_load(io, *client, dataset.value(), load, runner_options);
  run.metrics.counters_before = std::move(counters.counters_before);
  if (runner_options.metrics_target) {
    run.metrics.counters_after = lt::scrape_once(target.value(), o.api_key, nullptr);
  }
  for (auto& r : run.records) records.push_back(std::move(r));

  const lt::Summary summary = lt::summarize(records, run.duration_s, run.peak_concurrency,
                                            o.devices, slo.value(), run.metrics);
  info.config = {
      {"protocol", info.protocol},
      {"url", target->url()},
      {"grpc_target", o.grpc_target},
      {"model", info.model},
      {"dataset", o.dataset},
      {"dataset_path", o.dataset_path},
      {"input_len", dataset->input_len()},
      {"output_len", dataset->output_len()},
      {"range_ratio", o.range_ratio},
      {"turns", o.turns},
      {"tokens_per_word", dc.tokens_per_word},
      {"concurrency", o.concurrency},
      {"request_rate", std::isfinite(o.request_rate) ? json(o.request_rate) : json("inf")},
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
      {"devices", o.devices},
      {"metrics_interval", o.metrics_interval}};
  lt::print_table(std::cout, info, summary);
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << lt::to_json(info, summary, records, run.metrics).dump(1) << '\n';
    if (!out) return fail(1, "cannot write --json " + o.json_path);
  }
  if (summary.num_failed > 0) {
    for (const auto& r : records) {
      if (!r.ok && !r.warmup) {
        std::cerr << "lightserve-loadtest: " << summary.num_failed
                  << " request(s) failed; first: " << r.error_reason << ": " << r.error_detail
                  << '\n';
        break;
      }
    }
    return 3;
  }
  return 0;
}
