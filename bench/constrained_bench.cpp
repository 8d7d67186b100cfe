// Constrained decoding's cost (sampling/constraint.h, docs/benchmarks.md "Constrained
// decoding"): decode tokens/s of a batch of sequences (default 16, each with a 128-token random
// prompt, as runtime_bench) where every step's tokens are drawn by one Sampler per sequence,
// unconstrained, or with every sequence (or only one: "mixed") held to a JSON schema, a regex or
// a GBNF grammar (each a repetition that the end-of-generation ids, held back by min_tokens in
// every mode, never let end), so that every step computes a real mask. The modes are interleaved
// rep by rep, so machine noise hits them alike; the table gives each mode's throughput and its
// ratio to the unconstrained run of the same process, the CPU time (not inflated by other
// processes) of the sampling thread inside the samplers and of the mask workers
// (sampling/mask_workers.h) that fill the next masks meanwhile, per token, and the extra CPU over
// the unconstrained run as a share of its wall time per token.
//
//   constrained_bench [--model PATH] [--threads N] [--batch 16] [--gen 128] [--reps 3]
//                     [--mask-threads N] [--masks-only] [--emulated-forward-ms X] [--only MODE]
//
// --mask-threads: the mask workers (0: masks filled on demand on the sampling thread; default:
// the library's); a list ("0,2") runs each constrained mode once per count, interleaved.
// --masks-only: random logits instead of the forward pass (the masks' cost alone, for profiling).
// --emulated-forward-ms X: the same, with a sleep of X ms per step in place of the forward pass, as
// a device's forward would leave the CPU free. --only MODE: the unconstrained mode and this one
// (json_schema, regex, gbnf).
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_args.h"
#include "kernels/backend.h"
#include "model/constraint_vocabulary.h"
#include "model/llama_model.h"
#include "sampling/constraint.h"
#include "sampling/mask_workers.h"
#include "sampling/sampler.h"

using namespace lightserve;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// This thread's CPU time: what sampling costs, whatever else the machine runs meanwhile.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void check(const Status& s) {
  if (!s) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    std::exit(1);
  }
}

struct Mode {
  std::string name;
  std::shared_ptr<const sampling::CompiledConstraint> constraint;
  int constrained = 0;   // how many of the batch carry it
  int mask_threads = 0;  // the mask workers while it runs
  double seconds = 0;
  double sample_cpu_seconds = 0;  // this thread's CPU time inside Sampler::sample
  double worker_cpu_seconds = 0;  // the mask workers' CPU time during the decode steps
};

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = LIGHTSERVE_DEFAULT_MODEL;
  if (const char* env = std::getenv("LIGHTSERVE_MODEL")) model_path = env;
  int threads = 0, batch = 16, gen = 128, reps = 3, prompt_len = 128;
  std::vector<int> mask_threads = {sampling::constraint_mask_threads()};
  bool masks_only = false;
  double emulated_forward_ms = 0;
  std::string only;
  bench::BenchArgs args(argc, argv,
                        "constrained_bench [--model PATH] [--threads N] [--batch 16] [--gen 128] "
                        "[--reps 3] [--mask-threads N,..] [--masks-only] "
                        "[--emulated-forward-ms X] [--only MODE]");
  for (std::string a; args.next(&a);) {
    if (a == "--model")
      model_path = args.value();
    else if (a == "--threads")
      threads = args.int_value();
    else if (a == "--batch")
      batch = args.int_value();
    else if (a == "--gen")
      gen = args.int_value();
    else if (a == "--reps")
      reps = args.int_value();
    else if (a == "--mask-threads")
      mask_threads = args.int_list();
    else if (a == "--masks-only")
      masks_only = true;
    else if (a == "--emulated-forward-ms")
      emulated_forward_ms = args.double_value(), masks_only = true;
    else if (a == "--only")
      only = args.value();
    else
      args.unknown();
  }
  auto backend = kernels::make_cpu_backend(threads);
  auto model = bench::load_model_or_exit(model_path, *backend);
  const auto& config = model->config();

  const double t_vocab = now();
  sampling::ConstraintCompiler compiler(
      model::constraint_vocabulary(model->tokenizer(), config.vocab_size));
  const double vocab_seconds = now() - t_vocab;
  using Kind = sampling::ConstraintSpec::Kind;
  // Instances longer than any --gen: the masks are computed in the middle of the structure.
  const std::vector<std::pair<std::string, sampling::ConstraintSpec>> specs = {
      {"json_schema",
       {Kind::kJsonSchema,
        R"({"type": "array", "minItems": 200, "items": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}}},
            "required": ["name", "age", "tags"], "additionalProperties": false}})",
        {},
        "bench"}},
      {"regex", {Kind::kRegex, "([A-Z][a-z]{1,8}, [0-9]{1,3}; )+", {}, "bench"}},
      {"gbnf",
       {Kind::kGrammar,
        "root ::= (line \"\\n\")+\nline ::= word (\" \" word)* \".\"\nword ::= [a-z]{1,10}\n",
        {},
        "bench"}},
      // The same shapes without the counted repetitions ({1,8}, {1,3}, {1,10}), which XGrammar
      // unrolls into a chain of rules whose masks it must check token by token.
      {"regex_unbounded", {Kind::kRegex, "([A-Z][a-z]+, [0-9]+; )+", {}, "bench"}},
      {"gbnf_unbounded",
       {Kind::kGrammar,
        "root ::= (line \"\\n\")+\nline ::= word (\" \" word)* \".\"\nword ::= [a-z]+\n",
        {},
        "bench"}},
  };
  std::vector<Mode> modes = {{"unconstrained", nullptr, 0, mask_threads[0]}};
  std::vector<double> compile_seconds;
  for (const auto& [name, spec] : specs) {
    const double t0 = now();
    auto compiled = compiler.compile(spec);
    compile_seconds.push_back(now() - t0);
    if (!compiled) {
      std::fprintf(stderr, "error: %s\n", compiled.error().message.c_str());
      return 1;
    }
    modes.push_back({name, compiled.value(), batch});
  }
  modes.push_back({"json_schema, 1 of " + std::to_string(batch), modes[1].constraint, 1});
  if (!only.empty()) {
    std::erase_if(modes,
                  [&](const Mode& m) { return m.name != "unconstrained" && m.name != only; });
    if (modes.size() < 2) {
      std::fprintf(stderr, "error: --only %s: no such mode\n", only.c_str());
      return 2;
    }
  }
  // Each constrained mode once per mask worker count (interleaved like the rest).
  {
    std::vector<Mode> expanded = {modes[0]};
    for (size_t i = 1; i < modes.size(); ++i) {
      for (const int t : mask_threads) {
        Mode m = modes[i];
        m.mask_threads = t;
        if (mask_threads.size() > 1) m.name += ", " + std::to_string(t) + " mask threads";
        expanded.push_back(std::move(m));
      }
    }
    modes = std::move(expanded);
  }

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> token(100, config.vocab_size - 1);
  std::vector<float> logits;
  {  // warm-up
    model::SequenceCache cache(config, 64);
    std::vector<int32_t> t(32);
    for (auto& x : t) x = token(rng);
    model::BatchEntry e{&cache, t, false};
    check(model->forward({&e, 1}, logits));
  }
  // Every sequence (constrained or not) holds its stop ids back for the whole run (min_tokens), so
  // that no constraint completes and every step computes a real mask.
  sampling::SamplingParams greedy;
  greedy.temperature = 0;
  greedy.min_tokens = gen + 1;
  for (int32_t id = 0; id < config.vocab_size; ++id) {
    if (model->tokenizer().is_end_of_generation(id)) greedy.min_tokens_blocked.push_back(id);
  }
  // --masks-only: the logits of a step are one of 8 fixed random vectors instead of a forward pass.
  std::vector<std::vector<float>> noise(8);
  if (masks_only) {
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (auto& v : noise) {
      v.resize(static_cast<size_t>(batch) * config.vocab_size);
      for (float& l : v) l = normal(rng);
    }
  }
  int64_t stopped = 0;
  for (int r = 0; r < reps; ++r) {
    for (Mode& mode : modes) {
      sampling::set_constraint_mask_threads(mode.mask_threads);
      std::vector<std::unique_ptr<model::SequenceCache>> caches;
      std::vector<std::vector<int32_t>> prompts;
      std::vector<sampling::Sampler> samplers;
      samplers.reserve(static_cast<size_t>(batch));
      for (int b = 0; b < batch; ++b) {
        caches.push_back(std::make_unique<model::SequenceCache>(config, prompt_len + gen));
        std::vector<int32_t> p(static_cast<size_t>(prompt_len));
        for (auto& x : p) x = token(rng);
        prompts.push_back(std::move(p));
        sampling::SamplingParams params = greedy;
        if (b < mode.constrained) params.constraint = mode.constraint;
        samplers.emplace_back(params);
      }
      std::vector<model::BatchEntry> entries;
      for (int b = 0; b < batch; ++b) entries.push_back({caches[b].get(), prompts[b], false});
      check(model->forward(entries, logits));
      std::vector<int32_t> next(static_cast<size_t>(batch));
      const double t0 = now();
      const double w0 = sampling::constraint_mask_worker_cpu_seconds();
      for (int step = 0; step < gen; ++step) {
        entries.clear();
        for (int b = 0; b < batch; ++b) {
          const double s0 = thread_cpu_seconds();
          next[b] = samplers[b].sample(std::span<const float>(logits).subspan(
              static_cast<size_t>(b) * config.vocab_size, config.vocab_size));
          mode.sample_cpu_seconds += thread_cpu_seconds() - s0;
          stopped += model->tokenizer().is_end_of_generation(next[b]) && b < mode.constrained;
          entries.push_back({caches[b].get(), std::span(&next[b], 1), false});
        }
        if (masks_only) {
          logits = noise[static_cast<size_t>(step) % noise.size()];
          if (emulated_forward_ms > 0) {
            std::this_thread::sleep_for(
                std::chrono::duration<double, std::milli>(emulated_forward_ms));
          }
        } else {
          check(model->forward(entries, logits));
        }
      }
      mode.seconds += now() - t0;
      mode.worker_cpu_seconds += sampling::constraint_mask_worker_cpu_seconds() - w0;
    }
  }

  std::string threads_list;
  for (const int t : mask_threads)
    threads_list += (threads_list.empty() ? "" : ",") + std::to_string(t);
  std::printf(
      "model: %s\nbackend: %s\nbatch %d, prompt %d tokens, %d decode steps, %d reps "
      "(interleaved), greedy; mask worker threads: %s%s\n",
      model_path.c_str(), backend->description().c_str(), batch, prompt_len, gen, reps,
      threads_list.c_str(),
      emulated_forward_ms > 0
          ? "; each forward pass replaced by a sleep (a device's), random logits"
      : masks_only ? "; no forward pass (--masks-only), random logits"
                   : "");
  std::printf("vocabulary for XGrammar: %.3f s; compile:", vocab_seconds);
  for (size_t i = 0; i < specs.size(); ++i) {
    std::printf(" %s %.3f s%s", specs[i].first.c_str(), compile_seconds[i],
                i + 1 < specs.size() ? "," : "\n\n");
  }
  // The extra CPU a mode spends per token over the unconstrained run (the sampling thread's and the
  // mask workers'), as a share of the unconstrained run's wall time per token: what the masks
  // would cost a machine where they cannot overlap anything.
  std::printf(
      "| mode | decode tokens/s | vs unconstrained | sampling thread CPU us/token | mask workers "
      "CPU us/token | extra CPU / unconstrained wall per token |\n"
      "|---|---:|---:|---:|---:|---:|\n");
  const double tokens = static_cast<double>(batch) * gen * reps;
  const double base = tokens / modes[0].seconds;
  const double base_cpu = (modes[0].sample_cpu_seconds + modes[0].worker_cpu_seconds) / tokens;
  for (const Mode& m : modes) {
    const double tps = tokens / m.seconds;
    const double cpu = (m.sample_cpu_seconds + m.worker_cpu_seconds) / tokens;
    std::printf("| %s | %.1f | %.3f | %.1f | %.1f | %.1f%% |\n", m.name.c_str(), tps, tps / base,
                1e6 * m.sample_cpu_seconds / tokens, 1e6 * m.worker_cpu_seconds / tokens,
                100.0 * (cpu - base_cpu) * base);
  }
  if (stopped > 0) {
    std::printf("\nwarning: %lld constrained tokens were stop ids (a constraint completed)\n",
                static_cast<long long>(stopped));
  }
  return 0;
}
