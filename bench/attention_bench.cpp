// CPU attention throughput on SmolLM2-135M's attention shape (9 query heads, 3 KV heads,
// head_dim 64) through the CPU backend's attention(): prefill of one sequence (512 to 8192
// causal queries) and decode (1 query per sequence, batch 1 and 8, 1024/4096 keys), contiguous
// f16 cache, with llama.cpp's f16-rounded probabilities off and on. GFLOP/s counts
// 4 · heads · head_dim per attended key per query (QKᵀ and P·V). Best of several repetitions.
//
//   attention_bench [--threads N] [--min-ms T] [--reps R] [--only SUBSTRING]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/dtype.h"

using namespace lightserve::kernels;

namespace {

constexpr int kHeads = 9, kKvHeads = 3, kHeadDim = 64;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Case {
  const char* name;
  int batch;     // sequences
  int queries;   // per sequence
  int keys;      // cached keys per sequence (queries end at position keys − 1)
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  double min_ms = 200;
  int reps = 5;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (flag == "--min-ms" && i + 1 < argc) {
      min_ms = std::atof(argv[++i]);
    } else if (flag == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (flag == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: attention_bench [--threads N] [--min-ms T] [--reps R] [--only SUBSTRING]\n");
      return 2;
    }
  }
  auto backend = make_cpu_backend(threads);
  std::printf("# %s; heads %d, kv_heads %d, head_dim %d; best of %d reps of >= %.0f ms\n",
              backend->description().c_str(), kHeads, kKvHeads, kHeadDim, reps, min_ms);

  const Case cases[] = {
      {"prefill 512", 1, 512, 512},      {"prefill 1024", 1, 1024, 1024},
      {"prefill 2048", 1, 2048, 2048},   {"prefill 4096", 1, 4096, 4096},
      {"prefill 8192", 1, 8192, 8192},   {"decode b1 1024", 1, 1, 1024},
      {"decode b1 4096", 1, 1, 4096},    {"decode b8 1024", 8, 1, 1024},
      {"decode b8 4096", 8, 1, 4096},
  };
  std::printf("%-18s %14s %14s\n", "case", "GFLOP/s", "GFLOP/s f16p");
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t kv_width = static_cast<int64_t>(kKvHeads) * kHeadDim;
  const int64_t q_width = static_cast<int64_t>(kHeads) * kHeadDim;
  for (const Case& c : cases) {
    if (!only.empty() && std::string(c.name).find(only) == std::string::npos) continue;
    // One cache per sequence (decode batches read distinct memory, as a real batch does).
    std::vector<std::vector<uint16_t>> k(c.batch), v(c.batch);
    for (int b = 0; b < c.batch; ++b) {
      k[b].resize(static_cast<size_t>(c.keys * kv_width));
      v[b].resize(k[b].size());
      for (auto& x : k[b]) x = fp32_to_fp16(normal(rng));
      for (auto& x : v[b]) x = fp32_to_fp16(normal(rng));
    }
    const int64_t rows = static_cast<int64_t>(c.batch) * c.queries;
    std::vector<float> q(static_cast<size_t>(rows * q_width)), out(q.size());
    for (auto& x : q) x = normal(rng);
    std::vector<AttentionSeq> seqs(c.batch);
    double flops = 0;
    for (int b = 0; b < c.batch; ++b) {
      AttentionSeq& s = seqs[b];
      s.first_row = static_cast<int64_t>(b) * c.queries;
      s.num_queries = c.queries;
      s.first_pos = c.keys - c.queries;
      s.kv.kind = KvView::Kind::kContiguous;
      s.kv.k = k[b].data();
      s.kv.v = v[b].data();
      s.kv.row_stride = kv_width;
      for (int i = 0; i < c.queries; ++i) {
        flops += 4.0 * kHeads * kHeadDim * static_cast<double>(s.first_pos + i + 1);
      }
    }
    std::printf("%-18s", c.name);
    for (bool round : {false, true}) {
      AttentionShape shape;
      shape.heads = kHeads;
      shape.kv_heads = kKvHeads;
      shape.head_dim = kHeadDim;
      shape.q_stride = q_width;
      shape.out_stride = q_width;
      shape.scale = 0.125f;
      shape.round_probabilities_f16 = round;
      backend->attention(q.data(), seqs, shape, out.data());  // warm-up
      double best = 1e300;
      for (int r = 0; r < reps; ++r) {
        int iters = 0;
        const double t0 = now_seconds();
        double t1 = t0;
        do {
          backend->attention(q.data(), seqs, shape, out.data());
          ++iters;
          t1 = now_seconds();
        } while ((t1 - t0) * 1e3 < min_ms);
        best = std::min(best, (t1 - t0) / iters);
      }
      std::printf(" %14.2f", flops / best * 1e-9);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  return 0;
}
