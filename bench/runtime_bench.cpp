// Runtime benchmark of the model on a backend (the CPU by default, --device cuda for the GPU):
// prefill tokens/s at given prompt lengths,
// decode tokens/s at given batch sizes (each sequence with a 128-token prompt, as
// llama-batched-bench -npp 128 -ntg 128), and resident memory. Mirrors llama-bench /
// llama-batched-bench so scripts/bench_runtime.sh can put both side by side.
//
//   runtime_bench [--model PATH] [--threads N] [--device cpu|cuda[:N]] [--prefill 512,2048]
//                 [--decode 1,8,32] [--gen 128] [--reps 3] [--json PATH]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"
#include "sampling/sampler.h"

using namespace lightserve;

namespace {

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
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
  std::string json_path, device = "cpu";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model")
      model_path = next();
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--device")
      device = next();
    else if (a == "--prefill")
      prefill = parse_list(next());
    else if (a == "--decode")
      decode = parse_list(next());
    else if (a == "--gen")
      gen = std::stoi(next());
    else if (a == "--reps")
      reps = std::stoi(next());
    else if (a == "--json")
      json_path = next();
    else {
      std::fprintf(stderr,
                   "usage: %s [--model P] [--threads N] [--device cpu|cuda[:N]] "
                   "[--prefill 512,2048] [--decode 1,8,32] [--gen 128] [--reps 3] [--json PATH]\n",
                   argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }

  std::string why;
  auto backend = kernels::make_backend(device, threads, &why);
  if (backend == nullptr) {
    std::fprintf(stderr, "error: %s\n", why.c_str());
    return 1;
  }
  auto loaded = model::LlamaModel::load(model_path, *backend);
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

  for (int batch : decode) {
    double total_seconds = 0;
    for (int r = 0; r < reps; ++r) {
      std::vector<std::unique_ptr<model::SequenceCache>> caches;
      std::vector<std::vector<int32_t>> prompts;
      for (int b = 0; b < batch; ++b) {
        caches.push_back(std::make_unique<model::SequenceCache>(config, decode_prompt + gen));
        prompts.push_back(random_tokens(decode_prompt));
      }
      // Prompts first (not timed: llama-batched-bench reports generation speed separately).
      if (decode_prompt > 0) {
        std::vector<model::BatchEntry> entries;
        for (int b = 0; b < batch; ++b) entries.push_back({caches[b].get(), prompts[b], false});
        check(model->forward(entries, logits));
      }
      std::vector<int32_t> next(batch);
      const double t0 = now();
      for (int step = 0; step < gen; ++step) {
        std::vector<model::BatchEntry> entries;
        for (int b = 0; b < batch; ++b) {
          next[b] = sampling::argmax(std::span<const float>(logits).subspan(
              static_cast<size_t>(b) * config.vocab_size, config.vocab_size));
          entries.push_back({caches[b].get(), std::span(&next[b], 1), false});
        }
        check(model->forward(entries, logits));
      }
      total_seconds += now() - t0;
    }
    const double mean = total_seconds / reps;
    rows.push_back({"decode batch " + std::to_string(batch), batch * gen / mean, mean});
  }
  const long peak_rss = status_kib("VmHWM:");

  std::printf("model: %s\nbackend: %s\n\n", model_path.c_str(), backend->description().c_str());
  std::printf("| test | tokens/s | seconds |\n|---|---:|---:|\n");
  for (const Row& r : rows)
    std::printf("| %s | %.1f | %.3f |\n", r.test.c_str(), r.tokens_per_second, r.seconds);
  std::printf("\nresident memory: %.1f MiB after load, %.1f MiB peak\n", rss_after_load / 1024.0,
              peak_rss / 1024.0);

  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\n  \"backend\": \"" << backend->description()
        << "\",\n  \"rss_after_load_kib\": " << rss_after_load
        << ",\n  \"peak_rss_kib\": " << peak_rss << ",\n  \"results\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      out << "    {\"test\": \"" << rows[i].test
          << "\", \"tokens_per_second\": " << rows[i].tokens_per_second
          << ", \"seconds\": " << rows[i].seconds << "}" << (i + 1 < rows.size() ? ",\n" : "\n");
    }
    out << "  ]\n}\n";
  }
  return 0;
}
