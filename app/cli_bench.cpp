// `lightserve bench`: offline throughput of the continuous-batching engine with the real model.
// N prompts of I tokens (slices of real text) are submitted at once with max_tokens O and
// ignore_eos; the engine runs them to completion on this thread over a KV arena carved from
// --kv-budget (or, on a GPU, sized by --gpu-memory-utilization as serve sizes it). --compare runs
// plain full attention (the arena laid out for f = 0, same budget) and then the hybrid on the same
// prompts, and prints the ratios. Prefills advance a few layers per step within --step-budget
// token-layers (layered prefill), sharing each step with the decodes; the time split between steps
// with prefill work and decode-only steps is reported to explain the ratios. Requests decode
// greedily unless --temperature (with --top-k); --device-sampling off makes every step bring back
// whole logits rows instead of the sampled rows' best candidates, and off,on runs both on the same
// prompts and prints the ratio (the A/B of issue 12).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "app/lighttransfer_flags.h"
#include "app/model_flags.h"
#include "app/subcommands.h"
#include "base/units.h"
#include "kernels/backend.h"
#include "memory/capacity.h"
#include "scheduler/clock.h"
#include "serving/engine_stack.h"
#include "serving/gpu_memory.h"
#include "serving/model_loading.h"

namespace lightserve::cli {
namespace {

struct BenchOptions {
  ModelFlags model;  // --model or a dummy model (app/model_flags.h)
  int num_prompts = 8;
  int n = 1;  // samples per prompt, submitted as one group (OpenAI's n)
  bool no_shared_prefill = false;
  int input_len = 256;
  int output_len = 32;
  std::string kv_budget;              // bytes, e.g. 400MB, 1GiB
  double gpu_memory_utilization = 0;  // > 0: size the arena from the GPU (serving/gpu_memory.h)
  bool compare = false;
  std::string json;
  std::string policy = "reserve";
  int max_running = 64;
  int64_t step_budget = 0;  // token-layers; 0: SchedulerConfig::budget_or_default
  bool whole_prefill = false;
  float temperature = 0.0f;  // 0: greedy
  int top_k = 40;
  std::string device_sampling = "on";
  int threads = 0;
  std::string device = serving::default_device();
  bool quiet = false;
  std::string text_dir = "/usr/share/common-licenses";
  serving::LightTransferOptions lt;
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
};

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const double pos = q * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

struct RunResult {
  std::string label;
  std::string mode;
  int64_t arena_bytes = 0;
  int32_t num_pages = 0;
  int64_t max_sequences_planned = 0;
  double seconds = 0;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  int32_t num_completed = 0;
  int32_t peak_concurrent = 0;  // requests holding KV in one step
  int64_t num_steps = 0;
  int64_t num_preemptions = 0;
  int64_t step_budget = 0;  // token-layers
  Percentiles ttft, tpot;   // seconds
  // Where the time went: steps that ran prefill work (with or without decodes) and decode-only
  // steps, with the decode rows each carried.
  struct StepTime {
    int64_t num_steps = 0;
    double seconds = 0;
    double longest_seconds = 0;  // what a decode sharing the step waited for its token
    int64_t decode_rows = 0;
    double ms_per_step() const { return num_steps > 0 ? 1e3 * seconds / num_steps : 0.0; }
    double rows_per_step() const {
      return num_steps > 0 ? static_cast<double>(decode_rows) / num_steps : 0.0;
    }
  } prefill_steps, decode_steps;
  int64_t prefill_token_layers = 0;
  double forward_seconds = 0;  // inside the model's forward pass; the rest is the engine's
  bool device_sampling = true;
  int64_t candidate_rows = 0;  // logits rows brought back as their best candidates
  int64_t whole_rows = 0;      // and whole
  double requests_per_s() const { return num_completed / std::max(seconds, 1e-9); }
  double output_tokens_per_s() const { return output_tokens / std::max(seconds, 1e-9); }
  double total_tokens_per_s() const {
    return (prompt_tokens + output_tokens) / std::max(seconds, 1e-9);
  }
};

// The text the prompts are cut from: every regular file of `dir`, in name order, concatenated.
std::string read_corpus(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
    text += "\n\n";
  }
  return text;
}

// N prompts of `len` tokens: BOS (when the model adds one), then a slice of the corpus starting
// at a sliding offset, wrapping around the corpus when it is shorter than a prompt.
std::vector<std::vector<int32_t>> make_prompts(const model::Tokenizer& tok,
                                               const std::vector<int32_t>& corpus, int n, int len) {
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(n));
  const size_t size = corpus.size();
  const size_t stride = std::max<size_t>(1, size / static_cast<size_t>(std::max(n, 1)));
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t>& p = prompts[static_cast<size_t>(i)];
    if (tok.add_bos_token() && tok.bos_id() >= 0) p.push_back(tok.bos_id());
    size_t pos = (static_cast<size_t>(i) * stride) % size;
    while (static_cast<int>(p.size()) < len) {
      p.push_back(corpus[pos]);
      pos = (pos + 1) % size;
    }
  }
  return prompts;
}

Result<RunResult> run_once(const BenchOptions& o, int64_t kv_budget, model::LlamaModel& llama,
                           const model::LightTransferSettings& settings, bool device_sampling,
                           const std::string& label,
                           const std::vector<std::vector<int32_t>>& prompts) {
  const auto& config = llama.config();
  const int64_t context = static_cast<int64_t>(o.input_len) + o.output_len;
  // The assembly the daemon serves with (serving::EngineStack), stepped on this thread.
  serving::EngineStackOptions options;
  options.kv_budget_bytes = kv_budget;
  options.context_tokens = static_cast<int32_t>(context);
  options.max_running = o.max_running;
  options.policy = o.policy;
  options.layered_prefill = !o.whole_prefill;
  options.share_group_prefill = !o.no_shared_prefill;
  options.max_waiting = std::max(o.num_prompts * o.n, 1);
  options.step_budget_token_layers = o.step_budget;
  options.candidate_sampling = device_sampling;
  scheduler::SteadyClock clock;
  auto stack = serving::EngineStack::create(llama, settings, options, clock);
  if (!stack) return Error{label + ": " + stack.error().message};
  model::KvArena& kv = stack.value()->arena();
  scheduler::Engine* engine = &stack.value()->engine();
  RunResult r;
  r.label = label;
  r.device_sampling = device_sampling;
  r.mode = std::string(model::to_string(settings.mode));
  r.arena_bytes = kv.plan().arena_bytes;
  r.num_pages = kv.plan().num_pages;
  r.max_sequences_planned = settings.mode == model::LtMode::kFull ? kv.plan().max_full_sequences
                                                                  : kv.plan().max_hybrid_sequences;
  r.step_budget = engine->config().step_budget_token_layers;
  if (!o.quiet) {
    std::fprintf(stderr, "[%s] %s\n", label.c_str(), memory::format_capacity(kv.plan()).c_str());
  }

  std::vector<std::shared_ptr<scheduler::EventStream>> streams;
  const double t0 = clock.now_seconds();
  for (const auto& prompt : prompts) {
    std::vector<scheduler::RequestParams> group;
    for (int i = 0; i < o.n; ++i) {
      scheduler::RequestParams p;
      p.prompt = prompt;
      p.max_tokens = o.output_len;
      p.ignore_eos = true;
      p.sampling.temperature = o.temperature;
      p.sampling.top_k = o.top_k;
      p.sampling.seed = static_cast<uint64_t>(i);
      group.push_back(std::move(p));
    }
    scheduler::AddGroupResult added = engine->add_group(std::move(group));
    if (!added.ok()) return Error{label + ": request refused: " + added.error->message};
    for (scheduler::AddResult& m : added.members) streams.push_back(m.events);
  }
  std::vector<double> ttft, tpot;
  bool error = false;
  std::string error_message;
  auto drain = [&] {
    for (auto& s : streams) {
      for (scheduler::RequestEvent& e : s->drain()) {
        if (e.kind != scheduler::RequestEvent::Kind::kFinished) continue;
        if (e.finish_reason != scheduler::FinishReason::kLength &&
            e.finish_reason != scheduler::FinishReason::kStop) {
          error = true;
          if (e.error) error_message = e.error->message;
          continue;
        }
        const scheduler::RequestTimings& t = e.timings;
        ++r.num_completed;
        r.prompt_tokens += t.num_prompt_tokens;
        r.output_tokens += t.num_generated_tokens;
        ttft.push_back(t.time_to_first_token);
        if (t.num_generated_tokens > 1) {
          tpot.push_back((t.e2e_seconds - t.time_to_first_token) / (t.num_generated_tokens - 1));
        }
      }
    }
  };
  while (engine->has_work()) {
    const double step_start = clock.now_seconds();
    const scheduler::StepSummary s = engine->step();
    RunResult::StepTime& kind = s.num_prefills > 0 ? r.prefill_steps : r.decode_steps;
    const double step_seconds = clock.now_seconds() - step_start;
    ++kind.num_steps;
    kind.seconds += step_seconds;
    kind.longest_seconds = std::max(kind.longest_seconds, step_seconds);
    kind.decode_rows += s.num_decodes;
    r.prefill_token_layers +=
        s.token_layers - static_cast<int64_t>(s.num_decodes) * config.num_layers;
    // Requests that held KV during the step: still running, or finished in it.
    r.peak_concurrent = std::max(r.peak_concurrent, engine->stats().num_running + s.num_finished);
    drain();
  }
  r.seconds = clock.now_seconds() - t0;
  r.forward_seconds = stack.value()->executor().forward_seconds();
  drain();
  const scheduler::EngineStats stats = engine->stats();
  r.num_steps = stats.num_steps;
  r.num_preemptions = stats.num_preemptions_total;
  r.candidate_rows = stats.num_candidate_rows_total;
  r.whole_rows = stats.num_whole_rows_total;
  stack.value()->reset_engine();
  if (error) return Error{label + ": a request failed: " + error_message};
  r.ttft = percentiles(ttft);
  r.tpot = percentiles(tpot);
  return r;
}

void print_result(const RunResult& r) {
  std::printf(
      "== %s (mode %s): %d requests in %.2f s, %lld steps of at most %lld token-layers, "
      "%lld preemptions\n",
      r.label.c_str(), r.mode.c_str(), r.num_completed, r.seconds,
      static_cast<long long>(r.num_steps), static_cast<long long>(r.step_budget),
      static_cast<long long>(r.num_preemptions));
  std::printf("  KV arena:            %s, %d pages, %lld sequences of I+O planned\n",
              memory::format_bytes(r.arena_bytes).c_str(), r.num_pages,
              static_cast<long long>(r.max_sequences_planned));
  std::printf("  requests/s:          %.3f\n", r.requests_per_s());
  std::printf("  output tokens/s:     %.1f\n", r.output_tokens_per_s());
  std::printf("  total tokens/s:      %.1f\n", r.total_tokens_per_s());
  std::printf("  peak concurrent:     %d sequences\n", r.peak_concurrent);
  std::printf("  TTFT p50/p90/p99/max: %.1f / %.1f / %.1f / %.1f ms\n", r.ttft.p50 * 1e3,
              r.ttft.p90 * 1e3, r.ttft.p99 * 1e3, r.ttft.max * 1e3);
  std::printf("  TPOT p50/p90/p99:    %.1f / %.1f / %.1f ms\n", r.tpot.p50 * 1e3, r.tpot.p90 * 1e3,
              r.tpot.p99 * 1e3);
  for (const auto& [name, t] : {std::pair{"prefill steps:    ", &r.prefill_steps},
                                std::pair{"decode-only steps:", &r.decode_steps}}) {
    std::printf("  %s   %lld in %.2f s (%.1f ms each, longest %.1f ms, %.2f decodes each)\n", name,
                static_cast<long long>(t->num_steps), t->seconds, t->ms_per_step(),
                t->longest_seconds * 1e3, t->rows_per_step());
  }
  std::printf("  in the forward pass: %.2f s of %.2f s (the rest: scheduling, sampling, events)\n",
              r.forward_seconds, r.seconds);
  std::printf("  rows sampled:        %lld from their best candidates, %lld whole\n",
              static_cast<long long>(r.candidate_rows), static_cast<long long>(r.whole_rows));
}

nlohmann::json to_json(const RunResult& r) {
  auto pct = [](const Percentiles& p) {
    return nlohmann::json{{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"max", p.max}};
  };
  auto steps = [](const RunResult::StepTime& t) {
    return nlohmann::json{
        {"num_steps", t.num_steps},       {"seconds", t.seconds},
        {"ms_per_step", t.ms_per_step()}, {"longest_step_s", t.longest_seconds},
        {"decode_rows", t.decode_rows},   {"decodes_per_step", t.rows_per_step()}};
  };
  return {{"label", r.label},
          {"mode", r.mode},
          {"arena_bytes", r.arena_bytes},
          {"num_pages", r.num_pages},
          {"max_sequences_planned", r.max_sequences_planned},
          {"seconds", r.seconds},
          {"num_completed", r.num_completed},
          {"prompt_tokens", r.prompt_tokens},
          {"output_tokens", r.output_tokens},
          {"requests_per_s", r.requests_per_s()},
          {"output_tokens_per_s", r.output_tokens_per_s()},
          {"total_tokens_per_s", r.total_tokens_per_s()},
          {"peak_concurrent", r.peak_concurrent},
          {"num_steps", r.num_steps},
          {"num_preemptions", r.num_preemptions},
          {"step_budget_token_layers", r.step_budget},
          {"prefill_token_layers", r.prefill_token_layers},
          {"forward_seconds", r.forward_seconds},
          {"device_sampling", r.device_sampling ? "on" : "off"},
          {"candidate_rows", r.candidate_rows},
          {"whole_rows", r.whole_rows},
          {"prefill_steps", steps(r.prefill_steps)},
          {"decode_only_steps", steps(r.decode_steps)},
          {"ttft_s", pct(r.ttft)},
          {"tpot_s", pct(r.tpot)}};
}

int run_bench(const BenchOptions& o) {
  if (o.num_prompts < 1 || o.input_len < 1 || o.output_len < 1 || o.max_running < 1) {
    std::fprintf(stderr,
                 "error: --num-prompts, --input-len, --output-len and --max-running must be ≥ 1\n");
    return 2;
  }
  if (o.kv_budget.empty() == (o.gpu_memory_utilization <= 0)) {
    std::fprintf(stderr, "error: give exactly one of --kv-budget and --gpu-memory-utilization\n");
    return 2;
  }
  int64_t kv_budget = 0;
  if (!o.kv_budget.empty()) {
    kv_budget = parse_bytes(o.kv_budget);
    if (kv_budget <= 0) {
      std::fprintf(stderr,
                   "error: --kv-budget '%s' is not a positive byte count (e.g. 400MB, 1GiB)\n",
                   o.kv_budget.c_str());
      return 2;
    }
  } else if (o.gpu_memory_utilization > 1) {
    std::fprintf(stderr, "error: --gpu-memory-utilization must be in (0, 1]\n");
    return 2;
  }
  if (o.step_budget < 0) {
    std::fprintf(stderr, "error: --step-budget must be >= 0 token-layers (0: the default)\n");
    return 2;
  }
  const auto source = model_source_or_report(o.model);
  if (!source) return 2;
  const auto kv_type = kv_type_or_report(o.model);
  if (!kv_type) return 2;
  auto backend = serving::make_backend(o.device, o.threads);
  if (!backend) {
    std::fprintf(stderr, "error: %s\n", backend.error().message.c_str());
    return 1;
  }
  int64_t free_before_load = 0, total_memory = 0;
  backend.value()->memory_info(&free_before_load, &total_memory);
  auto loaded_model = serving::load_model(*source, *backend.value(), o.quiet, *kv_type);
  if (!loaded_model) {
    std::fprintf(stderr, "error: %s\n", loaded_model.error().message.c_str());
    return 1;
  }
  std::unique_ptr<model::LlamaModel>& llama = loaded_model.value();
  const auto& config = llama->config();
  if (static_cast<int64_t>(o.input_len) + o.output_len > config.context_length) {
    std::fprintf(stderr,
                 "error: --input-len + --output-len = %d exceeds the model's context %lld\n",
                 o.input_len + o.output_len, static_cast<long long>(config.context_length));
    return 2;
  }
  if (o.gpu_memory_utilization > 0) {
    const int64_t step_tokens = o.step_budget > 0 ? o.step_budget / config.num_layers
                                                  : scheduler::SchedulerConfig::kDefaultStepTokens;
    const int64_t context = static_cast<int64_t>(o.input_len) + o.output_len;
    auto sized = serving::size_kv_from_gpu(
        *llama, o.gpu_memory_utilization, free_before_load,
        static_cast<int32_t>(std::clamp<int64_t>(step_tokens, 1, context)), o.max_running, context);
    if (!sized) {
      std::fprintf(stderr, "error: %s\n", sized.error().message.c_str());
      return 1;
    }
    kv_budget = sized.value().kv_budget_bytes;
    std::fprintf(stderr, "%s\n", sized.value().describe().c_str());
  }
  auto resolved = o.lt.resolve(config);
  if (!resolved) {
    std::fprintf(stderr, "error: %s\n", resolved.error().message.c_str());
    return 2;
  }
  std::fprintf(stderr, "%s\n", resolved->summary.c_str());
  if (!resolved->warning.empty()) std::fprintf(stderr, "%s\n", resolved->warning.c_str());
  const model::LightTransferSettings* lt = &resolved->settings;
  const std::string text = read_corpus(o.text_dir);
  const std::vector<int32_t> corpus = llama->tokenizer().encode(text, false, false);
  if (corpus.empty()) {
    std::fprintf(stderr, "error: no prompt text found in %s\n", o.text_dir.c_str());
    return 1;
  }
  const auto prompts = make_prompts(llama->tokenizer(), corpus, o.num_prompts, o.input_len);
  char sampling[64] = "greedy";
  if (o.temperature > 0) {
    std::snprintf(sampling, sizeof sampling, "temperature %.2f top-k %d", o.temperature, o.top_k);
  }
  std::printf(
      "bench: %d prompts × %d tokens, %d output tokens each, KV budget %s, policy %s, "
      "max running %d, %s prefill, %s, device sampling %s\n",
      o.num_prompts, o.input_len, o.output_len, memory::format_bytes(kv_budget).c_str(),
      o.policy.c_str(), o.max_running, o.whole_prefill ? "whole" : "layered", sampling,
      o.device_sampling.c_str());

  std::vector<RunResult> results;
  std::vector<std::pair<model::LightTransferSettings, std::string>> runs;
  if (o.compare) {
    model::LightTransferSettings full = *lt;
    full.mode = model::LtMode::kFull;
    runs.emplace_back(full, "full");
  }
  runs.emplace_back(*lt, o.compare ? "hybrid" : std::string(model::to_string(lt->mode)));
  std::vector<bool> sampling_settings;  // --device-sampling, in the order listed
  for (size_t at = 0; at < o.device_sampling.size();) {
    const size_t comma = std::min(o.device_sampling.find(',', at), o.device_sampling.size());
    sampling_settings.push_back(o.device_sampling.substr(at, comma - at) == "on");
    at = comma + 1;
  }
  for (const bool device_sampling : sampling_settings) {
    for (const auto& [settings, base_label] : runs) {
      const std::string label = sampling_settings.size() > 1 ? base_label + ", device sampling " +
                                                                   (device_sampling ? "on" : "off")
                                                             : base_label;
      auto r = run_once(o, kv_budget, *llama, settings, device_sampling, label, prompts);
      if (!r) {
        std::fprintf(stderr, "error: %s\n", r.error().message.c_str());
        return 1;
      }
      print_result(r.value());
      results.push_back(std::move(r).value());
    }
  }
  if (sampling_settings.size() == 2 && results.size() == 2) {
    const RunResult& a = results[0];
    const RunResult& b = results[1];
    const double step_ratio = a.decode_steps.ms_per_step() > 0
                                  ? b.decode_steps.ms_per_step() / a.decode_steps.ms_per_step()
                                  : 0.0;
    std::printf(
        "device sampling %s / %s: decode-only step %.2f / %.2f ms (%.3fx), output tokens/s "
        "%.3fx\n",
        b.device_sampling ? "on" : "off", a.device_sampling ? "on" : "off",
        b.decode_steps.ms_per_step(), a.decode_steps.ms_per_step(), step_ratio,
        a.output_tokens_per_s() > 0 ? b.output_tokens_per_s() / a.output_tokens_per_s() : 0.0);
  }
  nlohmann::json out;
  out["num_prompts"] = o.num_prompts;
  out["input_len"] = o.input_len;
  out["output_len"] = o.output_len;
  out["kv_budget"] = kv_budget;
  out["policy"] = o.policy;
  out["max_running"] = o.max_running;
  out["layered_prefill"] = !o.whole_prefill;
  out["device_sampling"] = o.device_sampling;
  out["temperature"] = o.temperature;
  out["top_k"] = o.top_k;
  // What a roofline needs (scripts/gpu_roofline.py): bytes a decode step reads.
  out["model"] = {{"num_layers", config.num_layers},
                  {"num_kv_heads", config.num_kv_heads},
                  {"head_dim", config.head_dim},
                  {"weight_resident_bytes", llama->weight_resident_bytes()},
                  {"kv_dtype", std::string(kernels::kv_type_name(*kv_type))}};
  out["device"] = llama->backend().description();
  out["runs"] = nlohmann::json::array();
  for (const RunResult& r : results) out["runs"].push_back(to_json(r));
  if (o.compare && sampling_settings.size() == 1 && results.size() == 2) {
    const RunResult& f = results[0];
    const RunResult& h = results[1];
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    const double rps = ratio(h.requests_per_s(), f.requests_per_s());
    const double otps = ratio(h.output_tokens_per_s(), f.output_tokens_per_s());
    const double ttps = ratio(h.total_tokens_per_s(), f.total_tokens_per_s());
    const double conc = ratio(h.peak_concurrent, f.peak_concurrent);
    std::printf("== hybrid / full\n");
    std::printf("  requests/s:          %.3f×\n", rps);
    std::printf("  output tokens/s:     %.3f×\n", otps);
    std::printf("  total tokens/s:      %.3f×\n", ttps);
    std::printf("  peak concurrent:     %.3f×\n", conc);
    out["ratios"] = {{"requests_per_s", rps},
                     {"output_tokens_per_s", otps},
                     {"total_tokens_per_s", ttps},
                     {"peak_concurrent", conc}};
  }
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    f << out.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "error: cannot write %s\n", o.json.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Offline throughput of the continuous-batching engine (N prompts at once)");
  add_model_flags(cmd, o->model);
  cmd->add_option("--num-prompts", o->num_prompts, "Prompts submitted at once")
      ->capture_default_str();
  cmd->add_option("--n", o->n,
                  "Samples per prompt (OpenAI's n), added as one group: they share the prompt's "
                  "prefill")
      ->check(CLI::Range(1, 128))
      ->capture_default_str();
  cmd->add_flag("--no-shared-prefill", o->no_shared_prefill,
                "Every sample of a group prefills the prompt itself (for comparison)");
  cmd->add_option("--input-len", o->input_len, "Tokens per prompt")->capture_default_str();
  cmd->add_option("--output-len", o->output_len, "Tokens generated per prompt (EOS ignored)")
      ->capture_default_str();
  cmd->add_option("--kv-budget", o->kv_budget,
                  "KV arena size in bytes (e.g. 400MB, 1GiB); this or --gpu-memory-utilization");
  cmd->add_option("--gpu-memory-utilization", o->gpu_memory_utilization,
                  "GPU only: the fraction (0, 1] of the GPU's memory this process may use; the KV "
                  "arena gets what the weights, the measured activation peak and a margin leave "
                  "(as serve's engine.gpu_memory_utilization)");
  cmd->add_flag("--compare", o->compare,
                "Run full attention (arena laid out for f = 0, same budget), then the hybrid, and "
                "print the ratios");
  cmd->add_option("--json", o->json, "Write every printed number to this JSON file");
  cmd->add_option("--policy", o->policy, "Admission policy")
      ->check(CLI::IsMember({"reserve", "optimistic"}))
      ->capture_default_str();
  cmd->add_option("--max-running", o->max_running, "Requests holding KV at once")
      ->capture_default_str();
  cmd->add_option(
         "--step-budget", o->step_budget,
         "Work per engine step in token-layers (T tokens through k layers cost T·k): every "
         "running decode costs num_layers, and prefills advance by whole layers over their "
         "whole prompt in what is left. 0: 2048 · num_layers, i.e. 2048 tokens through the "
         "whole model per step, like vLLM's default max_num_batched_tokens. Raised to the "
         "engine's minimum (max_running · num_layers + I + O, the last term times "
         "num_layers with --whole-prefill) when below it. Smaller: decodes wait less "
         "behind prompts (lower TPOT), more steps")
      ->capture_default_str();
  cmd->add_flag("--whole-prefill", o->whole_prefill,
                "Run each prompt's prefill whole in one step (no layered prefill), for comparison");
  cmd->add_option("--temperature", o->temperature, "Sampling temperature; 0: greedy")
      ->check(CLI::Range(0.0f, 2.0f))
      ->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "Top-k of temperature sampling; 0: off")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--device-sampling", o->device_sampling,
                  "on: a step brings back only the best candidates of rows whose sampler reads "
                  "no more (greedy, top-k; on a GPU a top-k kernel), off: whole logits rows (as "
                  "serve's engine.device_sampling); off,on: both, on the same prompts, and the "
                  "ratio of their decode-only steps")
      ->check(CLI::IsMember({"on", "off", "off,on", "on,off"}))
      ->capture_default_str();
  cmd->add_option("--text-dir", o->text_dir, "Directory whose files give the prompt text")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads; 0 = one per core")->capture_default_str();
  cmd->add_option("--device", o->device, serving::kDeviceHelp)->capture_default_str();
  cmd->add_flag("--quiet,-q", o->quiet, "No progress or capacity report on stderr");
  add_lighttransfer_flags(cmd, o->lt);
  cmd->callback([o] { set_exit_code(run_bench(*o)); });
}

}  // namespace lightserve::cli
