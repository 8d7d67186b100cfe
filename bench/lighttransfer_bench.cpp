// LightTransfer memory and identification cost, measured on the real model (docs/design.md §4–5):
// for prompts of 2K, 4K and 8K tokens of real English text, the KV bytes a request holds after
// prefill and at its peak (from its actual block and slot allocation plus the prefill scratch),
// the most full-length layer caches alive at once, and prefill time with the lazy-ratio
// computation (online mode) against the same prefill without it (random mode: same layer-wise
// cuts, no scoring).
//
//   lighttransfer_bench [--model PATH] [--text FILE,FILE...] [--lengths 2048,4096,8192]
//                       [--lazy-fraction 0.5] [--reps 2]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bench_args.h"
#include "kernels/backend.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "model/llama_model.h"

using namespace lightserve;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = LIGHTSERVE_DEFAULT_MODEL;
  std::string texts =
      "/usr/share/common-licenses/GPL-3,/usr/share/common-licenses/GPL-2,"
      "/usr/share/common-licenses/Apache-2.0,/usr/share/common-licenses/LGPL-3";
  std::vector<int> lengths = {2048, 4096, 8192};
  double lazy_fraction = 0.5;
  int reps = 2;
  bench::BenchArgs args(argc, argv,
                        "lighttransfer_bench [--model PATH] [--text FILE,FILE...] "
                        "[--lengths 2048,4096,8192] [--lazy-fraction 0.5] [--reps 2]");
  for (std::string a; args.next(&a);) {
    if (a == "--model")
      model_path = args.value();
    else if (a == "--text")
      texts = args.value();
    else if (a == "--lengths")
      lengths = args.int_list();
    else if (a == "--lazy-fraction")
      lazy_fraction = args.double_value();
    else if (a == "--reps")
      reps = args.int_value();
    else
      args.unknown();
  }
  auto backend = kernels::make_cpu_backend(0);
  auto model = bench::load_model_or_exit(model_path, *backend);
  const auto& config = model->config();

  std::string text;
  for (const auto& path : split(texts, ',')) {
    std::ifstream in(path);
    if (!in) {
      std::fprintf(stderr, "error: cannot read %s\n", path.c_str());
      return 1;
    }
    text += std::string(std::istreambuf_iterator<char>(in), {}) + "\n\n";
  }
  const std::vector<int32_t> all = model->tokenizer().encode(text, false, false);
  std::printf("model: %s\ntext: %s (%zu tokens)\nbackend: %s\n\n", model_path.c_str(),
              texts.c_str(), all.size(), backend->description().c_str());
  std::printf(
      "| prompt | mode | KV after prefill | KV peak | vs full (after / peak) | full-length layers "
      "at peak | prefill s |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|\n");

  for (int n : lengths) {
    if (n > static_cast<int>(all.size())) {
      std::fprintf(stderr, "text has only %zu tokens\n", all.size());
      return 1;
    }
    std::vector<int32_t> prompt(all.begin(), all.begin() + n);
    struct Result {
      int64_t after = 0, peak = 0;
      int layers = 0;
      double seconds = 0;
    };
    auto measure = [&](model::LtMode mode) {
      model::LightTransferSettings lt;
      lt.mode = mode;
      lt.lazy_fraction = lazy_fraction;
      Result r;
      double total = 0;
      for (int rep = 0; rep < reps; ++rep) {
        auto arena = model::KvArena::create_for(*backend, config, lt, n);
        auto seq = model::HybridSequence::create(*arena.value(), config, lt, n);
        if (!seq) {
          std::fprintf(stderr, "error: %s\n", seq.error().message.c_str());
          std::exit(1);
        }
        std::vector<float> logits;
        const model::BatchEntry entry{seq.value().get(), prompt, false};
        const double t0 = now();
        if (Status s = model->forward({&entry, 1}, logits); !s) {
          std::fprintf(stderr, "%s\n", s.message().c_str());
          std::exit(1);
        }
        total += now() - t0;
        r.after = seq.value()->kv_bytes();
        r.peak = seq.value()->peak_kv_bytes();
        r.layers = seq.value()->peak_full_length_layers();
        seq.value().reset();
      }
      r.seconds = total / reps;
      return r;
    };
    const Result full = measure(model::LtMode::kFull);
    const Result test = measure(model::LtMode::kOnline);
    const Result random = measure(model::LtMode::kRandom);
    auto mib = [](int64_t b) { return b / (1024.0 * 1024.0); };
    std::printf("| %d | full | %.1f MiB | %.1f MiB | 1.000 / 1.000 | %d | %.3f |\n", n,
                mib(full.after), mib(full.peak), full.layers, full.seconds);
    std::printf("| %d | test f=%.2f | %.1f MiB | %.1f MiB | %.3f / %.3f | %d | %.3f |\n", n,
                lazy_fraction, mib(test.after), mib(test.peak), double(test.after) / full.after,
                double(test.peak) / full.peak, test.layers, test.seconds);
    std::printf(
        "| %d | random f=%.2f (no scoring) | %.1f MiB | %.1f MiB | %.3f / %.3f | %d | %.3f |\n", n,
        lazy_fraction, mib(random.after), mib(random.peak), double(random.after) / full.after,
        double(random.peak) / full.peak, random.layers, random.seconds);
    std::printf("|  | identification cost (test / random prefill − 1) | | | | | %+.2f%% |\n",
                100.0 * (test.seconds / random.seconds - 1.0));
  }
  return 0;
}
