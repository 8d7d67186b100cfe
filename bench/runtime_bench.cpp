// Runtime benchmark of the model on a backend (the CPU by default, --device cuda for the GPU):
// prefill tokens/s at given prompt lengths,
// decode tokens/s at given batch sizes (each sequence with a 128-token prompt, as
// llama-batched-bench -npp 128 -ntg 128, or --context tokens), and resident memory. Mirrors
// llama-bench / llama-batched-bench so scripts/bench_runtime.sh can put both side by side.
// --shape runs a dummy model of that shape (random weights, no file), and the JSON then holds
// what a decode roofline needs (scripts/gpu_tables.py): resident weight bytes and the KV shape.
//
// --fusion and --argmax time the decode rows under each listed setting, in one process (the A/B
// of the GPU's launch fusion and device argmax: Backend::set_fusion, LlamaModel::forward_argmax).
// Without --fusion the backend keeps its own setting (the CUDA backend: on unless
// LIGHTSERVE_CUDA_FUSED=0). --graphs likewise times CUDA graphs of the decode steps
// (Backend::set_graphs; the CUDA backend's own setting: off unless LIGHTSERVE_CUDA_GRAPHS=1), and
// the JSON says how many timed steps ran as graphs.
//
//   runtime_bench [--model PATH | --shape S [--dummy-type T]] [--threads N]
//                 [--device cpu|cuda[:N]] [--prefill 512,2048] [--decode 1,8,32] [--gen 128]
//                 [--context 128] [--kv-dtype f16|bf16] [--reps 3] [--json PATH]
//                 [--fusion on|off|off,on] [--argmax host|device|host,device]
//                 [--graphs on|off|off,on]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bench_args.h"
#include "kernels/backend.h"
#include "model/llama_model.h"
#include "model/model_source.h"
#include "sampling/sampler.h"

using namespace lightserve;

namespace {

// One decode setting: the backend's launch fusion, and where the greedy token is picked.
struct Variant {
  std::optional<bool> fusion;  // unset: the backend's own setting
  bool device_argmax = false;
  std::optional<bool> graphs;  // unset: the backend's own setting
  std::string label() const {
    std::string l = std::string("fusion ") +
                    (!fusion   ? "default"
                     : *fusion ? "on"
                               : "off") +
                    ", argmax " + (device_argmax ? "device" : "host");
    if (graphs) l += std::string(", graphs ") + (*graphs ? "on" : "off");
    return l;
  }
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

long status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::strtol(line.c_str() + std::strlen(key), nullptr, 10);
  }
  return -1;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void check(const Status& s) {
  if (!s) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = LIGHTSERVE_DEFAULT_MODEL;
  if (const char* env = std::getenv("LIGHTSERVE_MODEL")) model_path = env;
  int threads = 0, gen = 128, reps = 3, ubatch = 512, decode_prompt = 128;
  std::vector<int> prefill = {512, 2048}, decode = {1, 8, 32};
  std::string json_path, device = "cpu", shape, dummy_type = "q4_0", kv_dtype = "f16";
  std::string fusion_list = "default", argmax_list = "host", graphs_list = "default";
  bench::BenchArgs args(argc, argv,
                        "runtime_bench [--model P | --shape S [--dummy-type T]] [--threads N] "
                        "[--device cpu|cuda[:N]] [--prefill 512,2048] [--decode 1,8,32] "
                        "[--gen 128] [--context 128] [--kv-dtype f16|bf16] [--reps 3] "
                        "[--json PATH] [--fusion on|off|off,on] [--argmax host|device|host,device] "
                        "[--graphs on|off|off,on]");
  for (std::string a; args.next(&a);) {
    if (a == "--model")
      model_path = args.value();
    else if (a == "--threads")
      threads = args.int_value();
    else if (a == "--device")
      device = args.value();
    else if (a == "--prefill")
      prefill = args.int_list();
    else if (a == "--decode")
      decode = args.int_list();
    else if (a == "--gen")
      gen = args.int_value();
    else if (a == "--reps")
      reps = args.int_value();
    else if (a == "--json")
      json_path = args.value();
    else if (a == "--shape")
      shape = args.value();
    else if (a == "--dummy-type")
      dummy_type = args.value();
    else if (a == "--context")
      decode_prompt = args.int_value();
    else if (a == "--kv-dtype")
      kv_dtype = args.value();
    else if (a == "--fusion")
      fusion_list = args.value();
    else if (a == "--argmax")
      argmax_list = args.value();
    else if (a == "--graphs")
      graphs_list = args.value();
    else
      args.unknown();
  }

  std::vector<Variant> variants;
  for (const std::string& f : split(fusion_list)) {
    for (const std::string& m : split(argmax_list)) {
      for (const std::string& g : split(graphs_list)) {
        if ((f != "on" && f != "off" && f != "default") || (m != "host" && m != "device") ||
            (g != "on" && g != "off" && g != "default")) {
          std::fprintf(stderr,
                       "error: --fusion and --graphs take on/off, --argmax host/device (got %s, "
                       "%s, %s)\n",
                       f.c_str(), m.c_str(), g.c_str());
          return 2;
        }
        Variant v;
        if (f != "default") v.fusion = f == "on";
        v.device_argmax = m == "device";
        if (g != "default") v.graphs = g == "on";
        variants.push_back(v);
      }
    }
  }
  if (variants.empty()) {
    std::fprintf(stderr, "error: --fusion, --argmax and --graphs need at least one value each\n");
    return 2;
  }
  const bool label_variants = variants.size() > 1 || variants[0].fusion.has_value() ||
                              variants[0].device_argmax || variants[0].graphs.has_value();

  std::string why;
  auto backend = kernels::make_backend(device, threads, &why);
  if (backend == nullptr) {
    std::fprintf(stderr, "error: %s\n", why.c_str());
    return 1;
  }
  model::ModelSource source(model_path);
  if (!shape.empty()) {
    source.format = model::LoadFormat::kDummy;
    source.shape = shape;
    auto type = model::parse_dummy_type(dummy_type);
    if (!type) {
      std::fprintf(stderr, "error: --dummy-type: %s\n", type.error().message.c_str());
      return 2;
    }
    source.dummy_type = type.value();
  }
  model::LoadOptions options;
  const auto kv_type = kernels::parse_kv_type(kv_dtype);
  if (!kv_type) {
    std::fprintf(stderr, "error: --kv-dtype must be f16 or bf16, got '%s'\n", kv_dtype.c_str());
    return 2;
  }
  options.kv_type = *kv_type;
  if (decode_prompt < 0) {
    std::fprintf(stderr, "error: --context must be >= 0\n");
    return 2;
  }
  auto loaded = model::LlamaModel::load(source, *backend, options);
  if (!loaded) {
    std::fprintf(stderr, "error: %s\n", loaded.error().message.c_str());
    return 1;
  }
  auto model = std::move(loaded).value();
  const auto& config = model->config();
  const long rss_after_load = status_kib("VmRSS:");
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> token(100, config.vocab_size - 1);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> t(n);
    for (auto& x : t) x = token(rng);
    return t;
  };
  std::vector<float> logits;

  struct Row {
    std::string test;
    double tokens_per_second;
    double seconds;
    int batch = 0;  // decode rows: sequences per step, and steps timed
    int steps = 0;
    double forward_seconds = 0;  // decode rows: inside forward() (the rest is the host's argmax)
    const Variant* variant = nullptr;  // decode rows
    int64_t graph_launches = 0;        // decode rows: timed steps launched as CUDA graphs
  };
  std::vector<Row> rows;

  // Warm-up: one short prefill and decode (page faults, thread start, rope tables).
  {
    model::SequenceCache cache(config, 64);
    auto t = random_tokens(32);
    model::BatchEntry e{&cache, t, false};
    check(model->forward({&e, 1}, logits));
  }

  for (int n : prefill) {
    auto tokens = random_tokens(n);
    double best_total = 0;
    for (int r = 0; r < reps; ++r) {
      model::SequenceCache cache(config, n);
      const double t0 = now();
      for (int pos = 0; pos < n; pos += ubatch) {
        const int len = std::min(ubatch, n - pos);
        model::BatchEntry e{&cache, std::span(tokens).subspan(pos, len), false};
        check(model->forward({&e, 1}, logits));
      }
      best_total += now() - t0;
    }
    const double mean = best_total / reps;
    rows.push_back({"prefill " + std::to_string(n), n / mean, mean});
  }

  // Per batch and rep: the prompts once, then every variant decodes `gen` steps from the same
  // prefilled caches (cut back to the prompt between variants), after one untimed step each.
  for (int batch : decode) {
    std::vector<double> total_seconds(variants.size()), forward_seconds(variants.size());
    std::vector<int64_t> graph_launches(variants.size());
    for (int r = 0; r < reps; ++r) {
      std::vector<std::unique_ptr<model::SequenceCache>> caches;
      std::vector<std::vector<int32_t>> prompts;
      for (int b = 0; b < batch; ++b) {
        caches.push_back(
            std::make_unique<model::SequenceCache>(config, decode_prompt + std::max(gen, 3)));
        prompts.push_back(random_tokens(decode_prompt));
      }
      // Prompts first (not timed: llama-batched-bench reports generation speed separately), in
      // forward calls of at most kPromptRows rows (a long context times a large batch would not
      // fit one call's activations); each sequence's last call leaves its logits.
      constexpr int kPromptRows = 2048;
      std::vector<float> prompt_logits, last_logits(static_cast<size_t>(batch) * config.vocab_size);
      for (int b = 0; b < batch && decode_prompt > 0;) {
        std::vector<model::BatchEntry> entries;
        int rows = 0;
        const int first = b;
        if (decode_prompt >= kPromptRows) {  // one sequence, chunk by chunk
          for (int pos = 0; pos < decode_prompt; pos += kPromptRows) {
            const int len = std::min(kPromptRows, decode_prompt - pos);
            model::BatchEntry e{caches[b].get(), std::span(prompts[b]).subspan(pos, len), false};
            check(model->forward({&e, 1}, prompt_logits));
          }
          ++b;
        } else {  // whole prompts, as many as fit a call
          for (; b < batch && (rows == 0 || rows + decode_prompt <= kPromptRows); ++b) {
            entries.push_back({caches[b].get(), prompts[b], false});
            rows += decode_prompt;
          }
          check(model->forward(entries, prompt_logits));
        }
        std::copy(prompt_logits.begin(), prompt_logits.end(),
                  last_logits.begin() + static_cast<size_t>(first) * config.vocab_size);
      }
      if (decode_prompt == 0) last_logits = logits;  // the warm-up's (one sequence's) logits
      last_logits.resize(static_cast<size_t>(batch) * config.vocab_size);
      for (size_t v = 0; v < variants.size(); ++v) {
        const Variant& variant = variants[v];
        if (variant.fusion) backend->set_fusion(*variant.fusion);
        if (variant.graphs) backend->set_graphs(*variant.graphs);
        // `steps` greedy steps from the prompts; the first one's tokens come from the prompts'
        // logits, later ones from the last step's logits (host) or ids (device).
        auto decode_steps = [&](int steps, bool timed) {
          for (auto& cache : caches) cache->truncate(decode_prompt);
          logits = last_logits;
          std::vector<int32_t> next(batch), ids;
          const double t0 = now();
          for (int step = 0; step < steps; ++step) {
            std::vector<model::BatchEntry> entries;
            for (int b = 0; b < batch; ++b) {
              next[b] = variant.device_argmax && step > 0
                            ? ids[b]
                            : sampling::argmax(std::span<const float>(logits).subspan(
                                  static_cast<size_t>(b) * config.vocab_size, config.vocab_size));
              entries.push_back({caches[b].get(), std::span(&next[b], 1), false});
            }
            const double f0 = now();
            if (variant.device_argmax) {
              check(model->forward_argmax(entries, ids));
            } else {
              check(model->forward(entries, logits));
            }
            if (timed) forward_seconds[v] += now() - f0;
          }
          if (timed) total_seconds[v] += now() - t0;
        };
        // Untimed: the first step, and with graphs the steps that record and capture each graph.
        decode_steps(variant.graphs.value_or(false) ? 3 : 1, /*timed=*/false);
        const int64_t launches_before = backend->graph_launches();
        decode_steps(gen, /*timed=*/true);
        graph_launches[v] += backend->graph_launches() - launches_before;
      }
    }
    for (size_t v = 0; v < variants.size(); ++v) {
      const double mean = total_seconds[v] / reps;
      std::string name = "decode batch " + std::to_string(batch);
      if (label_variants) name += " (" + variants[v].label() + ")";
      rows.push_back({name, batch * gen / mean, mean, batch, gen, forward_seconds[v] / reps,
                      &variants[v], graph_launches[v] / std::max(reps, 1)});
    }
  }
  const long peak_rss = status_kib("VmHWM:");

  std::printf("model: %s, %s KV, decode context %d\nbackend: %s\n\n", source.describe().c_str(),
              kv_dtype.c_str(), decode_prompt, backend->description().c_str());
  std::printf("| test | tokens/s | seconds |\n|---|---:|---:|\n");
  for (const Row& r : rows)
    std::printf("| %s | %.1f | %.3f |\n", r.test.c_str(), r.tokens_per_second, r.seconds);
  std::printf("\nresident memory: %.1f MiB after load, %.1f MiB peak\n", rss_after_load / 1024.0,
              peak_rss / 1024.0);

  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\n  \"backend\": \"" << backend->description()
        << "\",\n  \"rss_after_load_kib\": " << rss_after_load
        << ",\n  \"peak_rss_kib\": " << peak_rss << ",\n  \"model\": \"" << source.describe()
        << "\",\n  \"num_layers\": " << config.num_layers
        << ",\n  \"num_kv_heads\": " << config.num_kv_heads
        << ",\n  \"head_dim\": " << config.head_dim
        << ",\n  \"weight_resident_bytes\": " << model->weight_resident_bytes()
        << ",\n  \"kv_dtype\": \"" << kv_dtype << "\",\n  \"decode_context\": " << decode_prompt
        << ",\n  \"gen\": " << gen << ",\n  \"results\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      out << "    {\"test\": \"" << rows[i].test
          << "\", \"tokens_per_second\": " << rows[i].tokens_per_second
          << ", \"seconds\": " << rows[i].seconds;
      if (rows[i].batch > 0) {
        out << ", \"batch\": " << rows[i].batch
            << ", \"ms_per_step\": " << 1e3 * rows[i].seconds / rows[i].steps
            << ", \"forward_ms_per_step\": " << 1e3 * rows[i].forward_seconds / rows[i].steps
            << ", \"fusion\": "
            << (!rows[i].variant->fusion   ? "null"
                : *rows[i].variant->fusion ? "true"
                                           : "false")
            << ", \"argmax\": \"" << (rows[i].variant->device_argmax ? "device" : "host") << "\""
            << ", \"graphs\": "
            << (!rows[i].variant->graphs   ? "null"
                : *rows[i].variant->graphs ? "true"
                                           : "false")
            << ", \"graph_launches\": " << rows[i].graph_launches;
      }
      out << "}" << (i + 1 < rows.size() ? ",\n" : "\n");
    }
    out << "  ]\n}\n";
  }
  return 0;
}
