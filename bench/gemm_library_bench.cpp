// Why lightserve's CPU matmul is its own int8 code rather than a GEMM library: for the model's
// shapes, times oneDNN's f32 and bf16 (AMX where present) matmuls on dequantized weights against
// the CPU backend's matmul on the Q4_1 weights themselves, same process, back to back.
//
//   gemm_library_bench [--threads 2] [--reps 20]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_args.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

using namespace lightserve;

namespace {

double time_best(int reps, const std::function<void()>& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

std::vector<kernels::BlockQ4_1> random_q4_1(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<kernels::BlockQ4_1> blocks(static_cast<size_t>(rows * cols / 32));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : blocks) {
    b.d = kernels::fp32_to_fp16(0.01f);
    b.m = kernels::fp32_to_fp16(-0.08f);
    for (auto& q : b.qs) q = static_cast<uint8_t>(byte(rng));
  }
  return blocks;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 20;
  bench::BenchArgs args(argc, argv, "gemm_library_bench [--threads 2] [--reps 20]");
  for (std::string flag; args.next(&flag);) {
    if (flag == "--threads")
      threads = args.int_value();
    else if (flag == "--reps")
      reps = args.int_value();
    else
      args.unknown();
  }
  auto backend = kernels::make_cpu_backend(threads);
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  std::mt19937 rng(1);
  std::printf(
      "lightserve backend: %s; oneDNN %d.%d (threads from its OpenMP/TBB runtime: set "
      "OMP_NUM_THREADS=%d)\n\n",
      backend->description().c_str(), dnnl_version()->major, dnnl_version()->minor, threads);
  std::printf(
      "| shape (out × in) | tokens | lightserve Q4_1 GFLOP/s | oneDNN f32 GFLOP/s | oneDNN bf16 "
      "GFLOP/s |\n|---|---:|---:|---:|---:|\n");
  struct Shape {
    const char* name;
    int64_t rows, cols;
  };
  for (const Shape s : {Shape{"qkv 960×576", 960, 576}, Shape{"gate_up 3072×576", 3072, 576},
                        Shape{"down 576×1536", 576, 1536}}) {
    auto blocks = random_q4_1(s.rows, s.cols, rng);
    kernels::WeightView view{kernels::DType::kQ4_1, s.rows, s.cols, blocks.data()};
    auto weight = backend->make_weight({&view, 1});
    std::vector<float> w_f32(static_cast<size_t>(s.rows * s.cols));
    for (int64_t r = 0; r < s.rows; ++r) {
      kernels::dequantize_row(kernels::DType::kQ4_1, blocks.data() + r * s.cols / 32,
                              w_f32.data() + r * s.cols, s.cols);
    }
    for (int64_t n : {1, 32, 512}) {
      std::vector<float> x(static_cast<size_t>(n * s.cols)), y(static_cast<size_t>(n * s.rows));
      std::normal_distribution<float> normal;
      for (auto& v : x) v = normal(rng);
      const double flops = 2.0 * n * s.rows * s.cols;
      const double ours = time_best(reps, [&] { backend->matmul(*weight, x.data(), n, y.data()); });

      auto onednn = [&](dnnl::memory::data_type wtype) {
        using tag = dnnl::memory::format_tag;
        using dt = dnnl::memory::data_type;
        const dnnl::memory::desc src_md({n, s.cols}, dt::f32, tag::ab);
        const dnnl::memory::desc wei_any({s.cols, s.rows}, wtype, tag::any);
        const dnnl::memory::desc dst_md({n, s.rows}, dt::f32, tag::ab);
        const dnnl::matmul::desc desc(src_md, wei_any, dst_md);
        dnnl::matmul::primitive_desc pd(desc, engine);  // oneDNN 2.x API (Debian 12)
        // Weights as [in, out] = wᵀ, reordered once into the library's preferred layout (not
        // timed).
        dnnl::memory w_user({{s.cols, s.rows}, dt::f32, tag::ba}, engine, w_f32.data());
        dnnl::memory w_mem(pd.weights_desc(), engine);
        dnnl::reorder(w_user, w_mem).execute(stream, w_user, w_mem);
        dnnl::memory src(src_md, engine, x.data()), dst(dst_md, engine, y.data());
        dnnl::matmul prim(pd);
        stream.wait();
        return time_best(reps, [&] {
          prim.execute(stream,
                       {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, dst}});
          stream.wait();
        });
      };
      const double f32 = onednn(dnnl::memory::data_type::f32);
      double bf16 = 0;
      try {
        bf16 = onednn(dnnl::memory::data_type::bf16);
      } catch (const dnnl::error&) {
        bf16 = 0;  // bf16 weights with f32 activations unsupported here
      }
      std::printf("| %s | %lld | %.0f | %.0f | %s |\n", s.name, static_cast<long long>(n),
                  flops / ours / 1e9, flops / f32 / 1e9,
                  bf16 > 0 ? std::to_string(static_cast<int>(flops / bf16 / 1e9)).c_str() : "n/a");
    }
  }
  return 0;
}
