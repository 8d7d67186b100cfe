// CPU matmul throughput on SmolLM2-135M's shapes, per ISA level: GFLOP/s (2·rows·cols·n / time)
// and GB/s of weight bytes read. Each layer shape is benchmarked over 30 distinct copies (one
// per model layer, used in turn) so decode numbers include the memory traffic of a real step.
//
//   matmul_bench [--threads N] [--levels scalar,avx2,avx512,amx] [--tokens 1,8,32,512]
//                [--min-ms T] [--cpu-time]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_args.h"
#include "kernels/cpu/matmul.h"

using namespace lightserve::kernels;
using namespace lightserve::kernels::cpu;

namespace {

struct BenchShape {
  const char* name;
  DType type;
  int64_t rows, cols;
  int copies;  // distinct weights cycled through
};

std::vector<uint8_t> random_weight(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<uint8_t> data(static_cast<size_t>(*row_bytes(type, cols) * rows));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
  const int64_t block = traits(type).block_bytes;
  const uint16_t d = fp32_to_fp16(0.01f), m = fp32_to_fp16(-0.08f);
  for (size_t off = 0; off < data.size(); off += block) {
    std::memcpy(&data[off], &d, 2);
    if (type == DType::kQ4_1) std::memcpy(&data[off + 2], &m, 2);
  }
  return data;
}

// Wall-clock seconds, or with --cpu-time this thread's CPU seconds (for 1-thread runs on a
// shared machine, where other processes steal the core).
bool g_cpu_time = false;
double now_seconds() {
  timespec ts;
  clock_gettime(g_cpu_time ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  double min_ms = 300;
  std::string levels_arg = "scalar,avx2,avx512,amx";
  std::string tokens_arg = "1,8,32,512";
  lightserve::bench::BenchArgs args(argc, argv,
                                    "matmul_bench [--threads 2] [--levels scalar,avx2,avx512,amx] "
                                    "[--tokens 1,8,32,512] [--min-ms 300] [--cpu-time]");
  for (std::string flag; args.next(&flag);) {
    if (flag == "--cpu-time")
      g_cpu_time = true;
    else if (flag == "--threads")
      threads = args.int_value();
    else if (flag == "--levels")
      levels_arg = args.value();
    else if (flag == "--tokens")
      tokens_arg = args.value();
    else if (flag == "--min-ms")
      min_ms = args.double_value();
    else
      args.unknown();
  }
  const CpuFeatures all = CpuFeatures::detect();
  std::vector<std::string> levels;
  std::stringstream ss(levels_arg);
  for (std::string level; std::getline(ss, level, ',');) {
    if (level == "avx2" && !all.avx2) continue;
    if (level == "avx512" && !(all.avx512 && all.avx512_vnni)) continue;
    if (level == "amx" && !all.amx_int8) continue;
    levels.push_back(level);
  }

  const std::vector<BenchShape> shapes = {{"qkv", DType::kQ4_1, 960, 576, 30},
                                          {"o", DType::kQ4_1, 576, 576, 30},
                                          {"gate_up", DType::kQ4_1, 3072, 576, 30},
                                          {"down", DType::kQ4_1, 576, 1536, 30},
                                          {"logits", DType::kQ8_0, 49152, 576, 1}};
  std::vector<int64_t> token_counts;
  std::stringstream tokens_stream(tokens_arg);
  for (std::string count; std::getline(tokens_stream, count, ',');) {
    const int64_t n = std::atoll(count.c_str());
    if (n <= 0) {
      std::fprintf(stderr, "--tokens: '%s' is not a positive token count\n", count.c_str());
      return 2;
    }
    token_counts.push_back(n);
  }

  std::printf("cpu: %s; %d threads\n", all.describe().c_str(), threads);
  std::printf("%-8s %-8s %-5s %6s %6s %5s %10s %10s %10s\n", "level", "shape", "type", "rows",
              "cols", "n", "us/call", "GFLOP/s", "GB/s(w)");
  ThreadPool pool(threads);
  std::mt19937 rng(1);
  // Model-step estimates: Σ over shapes of time × uses per step (30 layers; logits once).
  for (const std::string& level : levels) {
    const CpuFeatures f = level == "amx" ? all : all.limited_to(level);
    std::vector<double> step_us(token_counts.size(), 0.0);
    for (const BenchShape& shape : shapes) {
      std::vector<std::vector<uint8_t>> data;
      std::vector<std::unique_ptr<Weight>> weights;
      for (int c = 0; c < shape.copies; ++c) {
        data.push_back(random_weight(shape.type, shape.rows, shape.cols, rng));
        const WeightView view{shape.type, shape.rows, shape.cols, data.back().data()};
        weights.push_back(make_weight({&view, 1}, f));
      }
      const double weight_bytes = static_cast<double>(data[0].size());
      for (size_t ni = 0; ni < token_counts.size(); ++ni) {
        const int64_t n = token_counts[ni];
        const double flops = 2.0 * shape.rows * shape.cols * n;
        if (level == "scalar" && flops > 2e9) {
          std::printf("%-8s %-8s %-5s %6ld %6ld %5ld %10s\n", level.c_str(), shape.name,
                      std::string(traits(shape.type).name).c_str(), shape.rows, shape.cols, n,
                      "skipped");
          step_us[ni] = -1e30;
          continue;
        }
        std::vector<float> x(static_cast<size_t>(n * shape.cols)),
            y(static_cast<size_t>(n * shape.rows));
        std::normal_distribution<float> dist(0.0f, 1.0f);
        for (auto& v : x) v = dist(rng);
        matmul(pool, f, *weights[0], x.data(), n, y.data());  // warm-up
        int64_t calls = 0;
        const double start = now_seconds();
        double elapsed = 0;
        do {
          matmul(pool, f, *weights[calls % shape.copies], x.data(), n, y.data());
          ++calls;
          elapsed = now_seconds() - start;
        } while (elapsed * 1e3 < min_ms || calls < shape.copies);
        const double per_call = elapsed / static_cast<double>(calls);
        std::printf("%-8s %-8s %-5s %6ld %6ld %5ld %10.1f %10.1f %10.2f\n", level.c_str(),
                    shape.name, std::string(traits(shape.type).name).c_str(), shape.rows,
                    shape.cols, n, per_call * 1e6, flops / per_call * 1e-9,
                    weight_bytes / per_call * 1e-9);
        step_us[ni] += per_call * 1e6 * (shape.copies == 30 ? 30 : 1);
      }
    }
    for (size_t ni = 0; ni < token_counts.size(); ++ni) {
      if (step_us[ni] < 0) continue;
      std::printf("%-8s model step n=%-4ld matmuls only: %9.0f us  (%.1f tokens/s)\n",
                  level.c_str(), token_counts[ni], step_us[ni],
                  token_counts[ni] / (step_us[ni] * 1e-6));
    }
  }
  return 0;
}
