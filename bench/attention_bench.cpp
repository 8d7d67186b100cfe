// Attention throughput on SmolLM2-135M's attention shape (9 query heads, 3 KV heads,
// head_dim 64) through a backend's attention(): prefill of one sequence (512 to 8192 causal
// queries) and decode (1 query per sequence, batch 1 and 8 at 1024/4096 keys, batch 16 and 64 at
// 192 keys as in `lightserve bench --input-len 128 --output-len 64`, and batch 256 whose 75 MB
// of cache, as a batch-64 step's 30 layers, comes from DRAM), contiguous f16
// cache, with llama.cpp's f16-rounded probabilities off and on. GFLOP/s counts
// 4 · heads · head_dim per attended key per query (QKᵀ and P·V). Best of several repetitions.
// --device cuda runs the same cases on the CUDA backend (device 0; every buffer in device
// memory, timed between synchronize() calls) and prints ms per call, TFLOP/s and the KV cache
// read rate (GB/s: the bytes of the attended keys and values over the time, against the copy
// bandwidth of bench/copy_bandwidth for the decode path's distance from HBM bandwidth).
// --shape llama-3-8b: 32 heads, 8 KV heads, head_dim 128 (GQA group 4), decode at 8K-32K keys
// and batch 64 at 4K (issue 12's split-K decode at long contexts; values from a cheap generator,
// as 1 GiB of normal samples would take longer than the case), contiguous and paged (16-row
// blocks in a shuffled order, as the KV arena hands them out).
//
//   attention_bench [--device cpu|cuda[:N]] [--threads N] [--min-ms T] [--reps R] [--only
//   SUBSTRING] [--shape smollm2-135m|llama-3-8b]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_args.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

using namespace lightserve::kernels;

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Case {
  const char* name;
  int batch;           // sequences
  int queries;         // per sequence
  int keys;            // cached keys per sequence (queries end at position keys − 1)
  bool paged = false;  // blocks of kBlockSize rows in a shuffled order (the KV arena's layout)
};

constexpr int kBlockSize = 16;

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu";
  int threads = 2;
  double min_ms = 200;
  int reps = 5;
  std::string only, shape_name = "smollm2-135m";
  lightserve::bench::BenchArgs args(
      argc, argv,
      "attention_bench [--device cpu|cuda[:N]] [--threads N] [--min-ms T] "
      "[--reps R] [--only SUBSTRING] [--shape smollm2-135m|llama-3-8b]");
  for (std::string flag; args.next(&flag);) {
    if (flag == "--device")
      device = args.value();
    else if (flag == "--threads")
      threads = args.int_value();
    else if (flag == "--min-ms")
      min_ms = args.double_value();
    else if (flag == "--reps")
      reps = args.int_value();
    else if (flag == "--only")
      only = args.value();
    else if (flag == "--shape")
      shape_name = args.value();
    else
      args.unknown();
  }
  const bool big = shape_name == "llama-3-8b";
  if (!big && shape_name != "smollm2-135m") {
    std::fprintf(stderr, "attention_bench: --shape is smollm2-135m or llama-3-8b, not %s\n",
                 shape_name.c_str());
    return 2;
  }
  const int num_heads = big ? 32 : 9, num_kv_heads = big ? 8 : 3, head_dim = big ? 128 : 64;
  std::string error;
  std::unique_ptr<Backend> backend = make_backend(device, threads, &error);
  if (backend == nullptr) {
    std::fprintf(stderr, "attention_bench: %s\n", error.c_str());
    return 1;
  }
  const bool gpu = !backend->host_memory();
  std::printf("# %s; heads %d, kv_heads %d, head_dim %d; best of %d reps of >= %.0f ms\n",
              backend->description().c_str(), num_heads, num_kv_heads, head_dim, reps, min_ms);

  const std::vector<Case> small_cases = {
      {"prefill 512", 1, 512, 512},    {"prefill 1024", 1, 1024, 1024},
      {"prefill 2048", 1, 2048, 2048}, {"prefill 4096", 1, 4096, 4096},
      {"prefill 8192", 1, 8192, 8192}, {"decode b1 1024", 1, 1, 1024},
      {"decode b1 4096", 1, 1, 4096},  {"decode b8 1024", 8, 1, 1024},
      {"decode b8 4096", 8, 1, 4096},  {"decode b16 192", 16, 1, 192},
      {"decode b64 192", 64, 1, 192},  {"decode b256 192", 256, 1, 192},
  };
  const std::vector<Case> big_cases = {
      {"prefill 8192", 1, 8192, 8192},
      {"decode b1 8192", 1, 1, 8192},
      {"decode b1 32768", 1, 1, 32768},
      {"decode b16 8192", 16, 1, 8192},
      {"decode b16 16384", 16, 1, 16384},
      {"decode b64 4096", 64, 1, 4096},
      {"decode b16 8192 paged", 16, 1, 8192, true},
      {"decode b64 4096 paged", 64, 1, 4096, true},
  };
  const std::vector<Case>& cases = big ? big_cases : small_cases;
  if (gpu) {
    std::printf("%-22s %10s %10s %10s %10s %12s\n", "case", "ms", "TFLOP/s", "KV GB/s", "ms f16p",
                "TFLOP/s f16p");
  } else {
    std::printf("%-22s %14s %14s\n", "case", "GFLOP/s", "GFLOP/s f16p");
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t kv_width = static_cast<int64_t>(num_kv_heads) * head_dim;
  const int64_t q_width = static_cast<int64_t>(num_heads) * head_dim;
  for (const Case& c : cases) {
    if (!only.empty() && std::string(c.name).find(only) == std::string::npos) continue;
    // One cache per sequence (decode batches read distinct memory, as a real batch does).
    std::vector<std::vector<uint16_t>> k(c.batch), v(c.batch);
    uint32_t state = 12345;  // xorshift32: uniform values in [-2, 2) for the large shape
    auto cheap = [&state] {
      state ^= state << 13;
      state ^= state >> 17;
      state ^= state << 5;
      return static_cast<float>(state >> 8) * (4.0f / 16777216.0f) - 2.0f;
    };
    for (int b = 0; b < c.batch; ++b) {
      k[b].resize(static_cast<size_t>(c.keys * kv_width));
      v[b].resize(k[b].size());
      for (auto& x : k[b]) x = fp32_to_fp16(big ? cheap() : normal(rng));
      for (auto& x : v[b]) x = fp32_to_fp16(big ? cheap() : normal(rng));
    }
    const int64_t rows = static_cast<int64_t>(c.batch) * c.queries;
    std::vector<float> q(static_cast<size_t>(rows * q_width)), out(q.size());
    for (auto& x : q) x = normal(rng);
    // The buffers attention() reads and writes: the host vectors themselves on the CPU, copies
    // in device memory on the GPU.
    const float* q_arg = q.data();
    float* out_arg = out.data();
    std::vector<Buffer> device_buffers;
    auto on_device = [&](const void* src, int64_t bytes) {
      Buffer& b = device_buffers.emplace_back();
      b.reserve(*backend, bytes);
      backend->upload(b.get<void>(), src, bytes);
      return b.get<void>();
    };
    const auto q_bytes = static_cast<int64_t>(q.size() * sizeof(float));
    if (gpu) {
      device_buffers.reserve(2 + 2 * static_cast<size_t>(c.batch));
      q_arg = static_cast<const float*>(on_device(q.data(), q_bytes));
      out_arg = static_cast<float*>(on_device(out.data(), q_bytes));
    }
    std::vector<AttentionSeq> seqs(c.batch);
    std::vector<std::vector<int32_t>> tables(c.batch);  // paged: block b of tokens at tables[b]
    double flops = 0;
    // Cache bytes a call reads: every attended key and value once (decode); the whole cache once
    // (prefill, whose keys are reused across queries from on-chip memory).
    const double kv_bytes_read = 2.0 * 2.0 * static_cast<double>(kv_width) * c.keys * c.batch;
    for (int b = 0; b < c.batch; ++b) {
      AttentionSeq& s = seqs[b];
      s.first_row = static_cast<int64_t>(b) * c.queries;
      s.num_queries = c.queries;
      s.first_pos = c.keys - c.queries;
      s.kv.kind = KvView::Kind::kContiguous;
      s.kv.k = k[b].data();
      s.kv.v = v[b].data();
      if (gpu) {
        const auto kv_bytes = static_cast<int64_t>(k[b].size() * sizeof(uint16_t));
        s.kv.k = static_cast<const uint16_t*>(on_device(k[b].data(), kv_bytes));
        s.kv.v = static_cast<const uint16_t*>(on_device(v[b].data(), kv_bytes));
      }
      s.kv.row_stride = kv_width;
      if (c.paged) {
        tables[b].resize(static_cast<size_t>((c.keys + kBlockSize - 1) / kBlockSize));
        for (size_t i = 0; i < tables[b].size(); ++i) tables[b][i] = static_cast<int32_t>(i);
        std::shuffle(tables[b].begin(), tables[b].end(), rng);
        s.kv.kind = KvView::Kind::kPaged;
        s.kv.block_table = tables[b].data();
        s.kv.block_size = kBlockSize;
        s.kv.block_stride = kBlockSize * kv_width;
      }
      for (int i = 0; i < c.queries; ++i) {
        flops += 4.0 * num_heads * head_dim * static_cast<double>(s.first_pos + i + 1);
      }
    }
    std::printf("%-22s", c.name);
    for (bool round : {false, true}) {
      AttentionShape shape;
      shape.heads = num_heads;
      shape.kv_heads = num_kv_heads;
      shape.head_dim = head_dim;
      shape.q_stride = q_width;
      shape.out_stride = q_width;
      shape.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      shape.round_probabilities_f16 = round;
      backend->attention(q_arg, seqs, shape, out_arg);  // warm-up
      backend->synchronize();
      double best = 1e300;
      if (gpu) {
        // Asynchronous: time a run of calls sized from one synchronized call to about min_ms,
        // synchronizing only at its ends (so that launches overlap as in serving).
        const double t = now_seconds();
        backend->attention(q_arg, seqs, shape, out_arg);
        backend->synchronize();
        const double one = std::max(now_seconds() - t, 1e-7);
        const int calls = static_cast<int>(std::clamp(min_ms * 1e-3 / one, 1.0, 100000.0));
        for (int r = 0; r < reps; ++r) {
          const double t0 = now_seconds();
          for (int i = 0; i < calls; ++i) backend->attention(q_arg, seqs, shape, out_arg);
          backend->synchronize();
          best = std::min(best, (now_seconds() - t0) / calls);
        }
      } else {
        for (int r = 0; r < reps; ++r) {
          int iters = 0;
          const double t0 = now_seconds();
          double t1 = t0;
          do {
            backend->attention(q_arg, seqs, shape, out_arg);
            ++iters;
            t1 = now_seconds();
          } while ((t1 - t0) * 1e3 < min_ms);
          best = std::min(best, (t1 - t0) / iters);
        }
      }
      if (gpu) {
        std::printf(" %10.3f %10.2f", best * 1e3, flops / best * 1e-12);
        if (!round) std::printf(" %10.0f", kv_bytes_read / best * 1e-9);
      } else {
        std::printf(" %14.2f", flops / best * 1e-9);
      }
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  return 0;
}
