// The CUDA backend against the CPU backend (the oracle), op by op, on random inputs in the shapes
// of the default model (SmolLM2-135M: hidden 576, 9 query and 3 KV heads of 64, ff 1536, 49152
// tokens): memory, matmul and embedding, and the element-wise ops; attention is in
// cuda_attention_test.cpp. Every test skips where this build has no CUDA backend or no device is
// visible. Each comparison prints its worst error next to its tolerance, so one GPU run shows the
// margins.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "tests/kernels/cuda_test_support.h"
#include "tests/kernels/random_rows.h"

namespace lightserve::kernels {
namespace {

using namespace cuda_testing;  // NOLINT: the shared helpers and fixture

TEST_F(CudaBackendTest, PrintsDescription) {
  const std::string description = gpu().description();
  std::printf("CUDA backend: %s\n", description.c_str());
  EXPECT_EQ(description.rfind("cuda (", 0), 0u) << description;
  EXPECT_NE(description.find("sm_"), std::string::npos) << description;
}

// Runs everywhere: without a device (or without CUDA) the factory says why instead of throwing.
TEST(CudaBackendFactory, RefusesWithAReasonInsteadOfThrowing) {
  for (int device : {-1, 1 << 20}) {
    std::string why;
    EXPECT_EQ(make_cuda_backend(device, &why), nullptr) << "device " << device;
    EXPECT_FALSE(why.empty()) << "device " << device;
    std::printf("make_cuda_backend(%d): %s\n", device, why.c_str());
  }
  EXPECT_EQ(make_cuda_backend(-1, nullptr), nullptr);
}

TEST_F(CudaBackendTest, MemoryRoundTripsAndExhaustionIsBadAlloc) {
  std::mt19937 rng(1);
  // 64 MiB and a bit: too large for the context's pinned ring, so upload() copies directly.
  const size_t count = (size_t{64} << 20) / 4 + 3;
  const int64_t bytes = static_cast<int64_t>(count * 4);
  std::vector<uint32_t> host(count);
  for (auto& x : host) x = static_cast<uint32_t>(rng());
  const std::vector<uint32_t> original = host;
  Buffer a, b;
  a.reserve(gpu(), bytes);
  b.reserve(gpu(), bytes);
  gpu().upload(a.get<void>(), host.data(), bytes);
  // The source may be reused as soon as upload() returns.
  std::fill(host.begin(), host.end(), 0xdeadbeefu);
  gpu().copy(b.get<void>(), a.get<void>(), bytes);
  Buffer c;
  c.assign(gpu(), b.get<void>(), bytes);
  gpu().synchronize();
  EXPECT_TRUE(all_equal(to_host<uint32_t>(gpu(), c, count), original, 1 << 20, "round trip"));

  EXPECT_THROW(gpu().allocate(int64_t{1} << 46), std::bad_alloc);
  // The failed allocation leaves no error behind; a small upload (staged through pinned memory)
  // may also have its source overwritten at once.
  std::vector<uint32_t> small = {1, 2, 3};
  const Buffer d = to_backend(gpu(), small);
  small.assign(3, 0);
  EXPECT_TRUE(all_equal(to_host<uint32_t>(gpu(), d, 3), {1, 2, 3}, 3, "small upload"));
}

// ---- weights: matmul and embed ----

// Activations with some outlier channels and all-zero blocks, as real ones have.
std::vector<float> random_acts(int64_t n, int64_t cols, std::mt19937& rng) {
  std::vector<float> x = random_normal(static_cast<size_t>(n * cols), rng);
  for (int64_t t = 0; t < n; ++t) {
    x[t * cols + (t * 7) % cols] *= 20.0f;
    if (cols >= 64 && t % 3 == 0) std::fill_n(x.begin() + t * cols + 32, 32, 0.0f);
  }
  return x;
}

struct MatmulCase {
  const char* name;
  DType type;
  std::vector<int64_t> part_rows;
  int64_t cols;
  std::vector<int64_t> tokens;
};

// A weight of stacked random parts, with the views both backends are made from and its values
// as the GPU holds them (dequantized, rounded to f16).
struct RandomWeight {
  std::vector<std::vector<uint8_t>> data;
  std::vector<WeightView> views;
  std::vector<float> f16_values;  // [rows × cols]
  int64_t rows = 0;

  RandomWeight(const MatmulCase& c, std::mt19937& rng) {
    for (int64_t part : c.part_rows) {
      data.push_back(testing::random_rows(c.type, part, c.cols, rng, /*f16_values=*/true));
      views.push_back({c.type, part, c.cols, data.back().data()});
      rows += part;
    }
    f16_values.resize(static_cast<size_t>(rows * c.cols));
    float* out = f16_values.data();
    for (const WeightView& v : views) {
      const int64_t stride = *row_bytes(v.type, v.cols);
      for (int64_t r = 0; r < v.rows; ++r, out += v.cols) {
        dequantize_row(v.type, static_cast<const uint8_t*>(v.data) + r * stride, out, v.cols);
        for (int64_t k = 0; k < v.cols; ++k) out[k] = round_f16(out[k]);
      }
    }
  }
};

TEST_F(CudaBackendTest, MatmulAndEmbedMatchCpu) {
  const std::vector<MatmulCase> cases = {
      {"q+k+v", DType::kF16, {576, 192, 192}, 576, {1, 3, 77, 600, 2100}},
      {"gate+up", DType::kF32, {1536, 1536}, 576, {1, 3, 77, 600}},
      {"down", DType::kQ4_1, {576}, 1536, {1, 3, 77, 600}},
      {"q+k+v", DType::kQ8_0, {576, 192, 192}, 576, {1, 77}},
      {"small", DType::kQ4_0, {100, 28}, 64, {1, 3}},
      {"odd width", DType::kBF16, {40}, 96, {1, 3}},
      {"odd width", DType::kF16, {7}, 100, {1, 5}},
      {"logits", DType::kQ8_0, {49152}, 576, {1, 77}},
      {"q+k", DType::kQ5_0, {576, 192}, 576, {1, 77}},
      {"o", DType::kQ5_1, {576}, 576, {1, 3}},
      {"down", DType::kQ4_K, {576}, 1536, {1, 77}},
      {"down", DType::kQ5_K, {576}, 1536, {1, 3}},
      {"down", DType::kQ6_K, {576}, 1536, {1, 77}},
  };
  std::mt19937 rng(2);
  for (const MatmulCase& c : cases) {
    const RandomWeight w(c, rng);
    const std::string shape = std::string(c.name) + " " + std::string(traits(c.type).name) + " [" +
                              std::to_string(w.rows) + " × " + std::to_string(c.cols) + "]";
    auto gw = gpu().make_weight(w.views);
    auto cw = cpu().make_weight(w.views);
    ASSERT_NE(gw, nullptr) << shape;
    ASSERT_NE(cw, nullptr) << shape;
    EXPECT_EQ(gw->rows(), w.rows) << shape;
    EXPECT_EQ(gw->cols(), c.cols) << shape;
    EXPECT_EQ(gw->type(), c.type) << shape;
    EXPECT_EQ(gw->resident_bytes(), w.rows * c.cols * 2) << shape;

    for (int64_t n : c.tokens) {
      const std::string what = "matmul " + shape + " n " + std::to_string(n);
      const std::vector<float> x = random_acts(n, c.cols, rng);
      std::vector<float> want(static_cast<size_t>(n * w.rows));
      cpu().matmul(*cw, x.data(), n, want.data());
      const Buffer gx = to_backend(gpu(), x);
      Buffer gy;
      gy.reserve<float>(gpu(), n * w.rows);
      gpu().matmul(*gw, gx.get<float>(), n, gy.get<float>());
      const std::vector<float> got = to_host<float>(gpu(), gy, want.size());

      // Against what the GPU should compute exactly (f16 weights times f16-rounded activations,
      // summed in f64) on a few tokens: only f32 accumulation order may differ.
      std::vector<int64_t> sample = {0, n / 2, n - 1};
      sample.erase(std::unique(sample.begin(), sample.end()), sample.end());
      std::vector<float> exact, got_sample;
      for (int64_t t : sample) {
        std::vector<float> x16(static_cast<size_t>(c.cols));
        for (int64_t k = 0; k < c.cols; ++k) x16[k] = round_f16(x[t * c.cols + k]);
        for (int64_t r = 0; r < w.rows; ++r) {
          const float* wr = w.f16_values.data() + r * c.cols;
          double acc = 0;
          for (int64_t k = 0; k < c.cols; ++k) acc += static_cast<double>(wr[k]) * x16[k];
          exact.push_back(static_cast<float>(acc));
          got_sample.push_back(got[t * w.rows + r]);
        }
      }
      EXPECT_TRUE(
          all_close(got_sample, exact, 1e-3 * max_abs(exact), 0, w.rows, what + " vs exact f16"));
      // Against the CPU: it multiplies exact (not f16-rounded) activations and, for quantized
      // weights, activations quantized to 8 bits per block of 32 (llama.cpp's numerics), which
      // moves outputs by up to ~1.5% of the largest on these inputs (outlier channels); a
      // misread layout moves them by ~100%.
      const bool quantized = traits(c.type).block_elements > 1;
      const double tol = quantized ? 5e-2 : 2e-3;
      EXPECT_TRUE(all_close(got, want, tol * max_abs(want), 0, w.rows, what + " vs cpu"));
    }

    // Embedding rows: the CPU's exact values, within the GPU's f16 rounding of them.
    std::vector<int32_t> ids = {0, static_cast<int32_t>(w.rows - 1), 0};
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(w.rows - 1));
    for (int i = 0; i < 29; ++i) ids.push_back(id(rng));
    std::vector<float> want(ids.size() * static_cast<size_t>(c.cols));
    cpu().embed(*cw, ids, want.data());
    Buffer out;
    out.reserve<float>(gpu(), static_cast<int64_t>(want.size()));
    gpu().embed(*gw, ids, out.get<float>());
    EXPECT_TRUE(all_close(to_host<float>(gpu(), out, want.size()), want, 1e-7, 1.0 / 2048, c.cols,
                          "embed " + shape));
  }
}

TEST_F(CudaBackendTest, MakeWeightRefusesWhatItCannotDecode) {
  std::vector<uint8_t> data(64 * 64 * 4, 0);
  const WeightView f16{DType::kF16, 4, 64, data.data()};
  auto refused = [&](const std::vector<WeightView>& parts) {
    return gpu().make_weight(parts) == nullptr;
  };
  EXPECT_TRUE(refused({}));
  EXPECT_TRUE(refused({f16, {DType::kF16, 4, 32, data.data()}}));         // mixed widths
  EXPECT_FALSE(refused({f16, {DType::kF32, 4, 64, data.data()}}));        // mixed types
  EXPECT_TRUE(refused({{DType::kQ8_0, 4, 48, data.data()}}));             // partial block
  EXPECT_TRUE(refused({{DType::kQ6_K, 4, 64, data.data()}}));             // partial super-block
  EXPECT_TRUE(refused({{static_cast<DType>(10), 4, 256, data.data()}}));  // Q2_K
  EXPECT_TRUE(refused({{DType::kF16, 4, 64, nullptr}}));
  EXPECT_FALSE(refused({f16}));
}

// ---- element-wise ops ----

TEST_F(CudaBackendTest, RmsNormMatchesCpuInPlaceAndOut) {
  std::mt19937 rng(3);
  for (int64_t dim : {576, 1536, 100}) {
    for (int64_t n : {1, 3, 77, 600}) {
      std::vector<float> x = random_normal(static_cast<size_t>(n * dim), rng, 3.0f);
      for (int64_t r = 0; r < n; ++r) {  // rows of very different magnitudes
        const float s = std::pow(10.0f, static_cast<float>(r % 5) - 2.0f);
        for (int64_t i = 0; i < dim; ++i) x[r * dim + i] *= s;
      }
      const std::vector<float> weight = random_normal(static_cast<size_t>(dim), rng);
      std::vector<float> want(x.size());
      cpu().rms_norm(x.data(), weight.data(), n, dim, 1e-5f, want.data());
      Buffer gx = to_backend(gpu(), x);
      const Buffer gw = to_backend(gpu(), weight);
      Buffer gy;
      gy.reserve<float>(gpu(), n * dim);
      gpu().rms_norm(gx.get<float>(), gw.get<float>(), n, dim, 1e-5f, gy.get<float>());
      gpu().rms_norm(gx.get<float>(), gw.get<float>(), n, dim, 1e-5f, gx.get<float>());
      const std::string what = "rms_norm n " + std::to_string(n) + " dim " + std::to_string(dim);
      // Same f64 sum of f32 squares; only its summation order differs.
      EXPECT_TRUE(all_close(to_host<float>(gpu(), gy, x.size()), want, 1e-30, 1e-6, dim, what));
      EXPECT_TRUE(all_close(to_host<float>(gpu(), gx, x.size()), want, 1e-30, 1e-6, dim,
                            what + " in place"));
    }
  }
}

TEST_F(CudaBackendTest, RopeMatchesCpuAndLeavesOtherColumns) {
  std::mt19937 rng(4);
  for (float freq_base : {10000.0f, 100000.0f}) {
    for (int64_t n : {1, 3, 77, 600}) {
      std::vector<int32_t> positions(static_cast<size_t>(n));
      std::uniform_int_distribution<int32_t> pos(0, 32767);
      for (auto& p : positions) p = pos(rng);
      positions[0] = 0;
      if (n > 1) positions[1] = 32767;
      std::vector<float> want = random_normal(static_cast<size_t>(n * kQStride), rng);
      Buffer gx = to_backend(gpu(), want);
      // Queries, then keys, of fused q+k+v rows; the values must stay as they are.
      RopeParams params;
      params.freq_base = freq_base;
      cpu().rope(want.data(), positions, kHeads, kHeadDim, kQStride, params);
      cpu().rope(want.data() + kHeads * kHeadDim, positions, kKvHeads, kHeadDim, kQStride, params);
      gpu().rope(gx.get<float>(), positions, kHeads, kHeadDim, kQStride, params);
      gpu().rope(gx.get<float>() + kHeads * kHeadDim, positions, kKvHeads, kHeadDim, kQStride,
                 params);
      // Angles are built bit for bit as the CPU builds them; cosf/sinf may differ by an ulp or
      // two (angles computed differently, e.g. in f64, would be off by ~1e-3 at large positions).
      EXPECT_TRUE(all_close(
          to_host<float>(gpu(), gx, want.size()), want, 1e-5, 1e-5, kQStride,
          "rope base " + std::to_string(static_cast<int>(freq_base)) + " n " + std::to_string(n)));
    }
  }
}

// NEOX pairing and Llama-3.1 frequency factors (device memory on the GPU, host on the CPU).
TEST_F(CudaBackendTest, RopeNeoxAndFrequencyFactorsMatchCpu) {
  std::mt19937 rng(14);
  std::vector<float> factors(kHeadDim / 2);
  for (int i = 0; i < kHeadDim / 2; ++i) factors[i] = 1.0f + 7.0f * float(i) / (kHeadDim / 2 - 1);
  const Buffer gfactors = to_backend(gpu(), factors);
  for (bool neox : {false, true}) {
    for (bool with_factors : {false, true}) {
      for (int64_t n : {1, 77, 600}) {
        std::vector<int32_t> positions(static_cast<size_t>(n));
        std::uniform_int_distribution<int32_t> pos(0, 131071);
        for (auto& p : positions) p = pos(rng);
        positions[0] = 0;
        std::vector<float> want = random_normal(static_cast<size_t>(n * kQStride), rng);
        Buffer gx = to_backend(gpu(), want);
        RopeParams params;
        params.freq_base = 500000.0f;
        params.neox = neox;
        params.freq_factors = with_factors ? factors.data() : nullptr;
        cpu().rope(want.data(), positions, kHeads + kKvHeads, kHeadDim, kQStride, params);
        params.freq_factors = with_factors ? gfactors.get<float>() : nullptr;
        gpu().rope(gx.get<float>(), positions, kHeads + kKvHeads, kHeadDim, kQStride, params);
        EXPECT_TRUE(all_close(to_host<float>(gpu(), gx, want.size()), want, 1e-5, 1e-5, kQStride,
                              std::string("rope neox ") + (neox ? "1" : "0") + " factors " +
                                  (with_factors ? "1" : "0") + " n " + std::to_string(n)));
      }
    }
  }
}

TEST_F(CudaBackendTest, AddBiasMatchesCpuExactly) {
  std::mt19937 rng(15);
  const int64_t width = kHeads * kHeadDim + 2 * kKvWidth;
  const std::vector<float> bias = random_normal(static_cast<size_t>(width), rng);
  const Buffer gbias = to_backend(gpu(), bias);
  for (int64_t n : {1, 77, 600}) {
    for (int64_t stride : {width, width + 5}) {
      std::vector<float> y = random_normal(static_cast<size_t>(n * stride), rng);
      Buffer gy = to_backend(gpu(), y);
      cpu().add_bias(y.data(), bias.data(), n, width, stride);
      gpu().add_bias(gy.get<float>(), gbias.get<float>(), n, width, stride);
      EXPECT_TRUE(
          all_equal(to_host<float>(gpu(), gy, y.size()), y, stride,
                    "add_bias n " + std::to_string(n) + " stride " + std::to_string(stride)));
    }
  }
}

TEST_F(CudaBackendTest, SwigluMatchesCpu) {
  std::mt19937 rng(5);
  for (int64_t ff : {1536, 100}) {
    for (int64_t n : {1, 3, 77, 600}) {
      std::vector<float> gate_up = random_normal(static_cast<size_t>(n * 2 * ff), rng, 4.0f);
      gate_up[0] = -100.0f;  // exp overflows on one side, underflows on the other
      gate_up[ff - 1] = 100.0f;
      std::vector<float> want(static_cast<size_t>(n * ff));
      cpu().swiglu(gate_up.data(), n, ff, want.data());
      const Buffer gin = to_backend(gpu(), gate_up);
      Buffer gout;
      gout.reserve<float>(gpu(), n * ff);
      gpu().swiglu(gin.get<float>(), n, ff, gout.get<float>());
      EXPECT_TRUE(all_close(to_host<float>(gpu(), gout, want.size()), want, 1e-6, 1e-5, ff,
                            "swiglu n " + std::to_string(n) + " ff " + std::to_string(ff)));
    }
  }
}

TEST_F(CudaBackendTest, AddMatchesCpuExactly) {
  std::mt19937 rng(6);
  for (int64_t count : {1, 1000, 3000001}) {
    std::vector<float> y = random_normal(static_cast<size_t>(count), rng);
    const std::vector<float> x = random_normal(static_cast<size_t>(count), rng);
    Buffer gy = to_backend(gpu(), y);
    const Buffer gx = to_backend(gpu(), x);
    cpu().add(y.data(), x.data(), count);
    gpu().add(gy.get<float>(), gx.get<float>(), count);
    EXPECT_TRUE(all_equal(to_host<float>(gpu(), gy, y.size()), y, count,
                          "add count " + std::to_string(count)));
  }
}

TEST_F(CudaBackendTest, StoreKvRoundsAsCpuAndKeepsPadding) {
  std::mt19937 rng(7);
  const std::vector<float> special = {
      65504.0f, 65519.0f,  65520.0f, 70000.0f,           -70000.0f,          1e-8f,
      5.96e-8f, 2.98e-8f,  -2.9e-8f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, -0.0f,
      INFINITY, -INFINITY, 6.1e-5f,  1.0f + 1.0f / 256,  1.0f + 3.0f / 256,  1e-40f,
      -1e-40f,  3e38f};
  for (const DType type : {DType::kF16, DType::kBF16}) {
    for (int64_t width : {192, 100}) {
      for (int64_t n : {1, 77, 600}) {
        const int64_t src_stride = width + 13, dst_stride = width + 8;
        std::vector<float> src = random_normal(static_cast<size_t>(n * src_stride), rng, 10.0f);
        for (size_t i = 0; i < special.size() && i < static_cast<size_t>(width); ++i)
          src[i] = special[i];
        std::vector<uint16_t> want(static_cast<size_t>(n * dst_stride), 0xabcd);
        Buffer gdst = to_backend(gpu(), want);
        const Buffer gsrc = to_backend(gpu(), src);
        cpu().store_kv(src.data(), src_stride, n, width, want.data(), dst_stride, type);
        gpu().store_kv(gsrc.get<float>(), src_stride, n, width, gdst.get<uint16_t>(), dst_stride,
                       type);
        std::string what = "store_kv ";
        what.append(kv_type_name(type));
        what.append(" n " + std::to_string(n) + " width " + std::to_string(width));
        EXPECT_TRUE(all_equal(to_host<uint16_t>(gpu(), gdst, want.size()), want, dst_stride, what));
      }
    }
  }
}

TEST_F(CudaBackendTest, CopyRowsAndRunsMatchCpu) {
  std::mt19937 rng(8);
  struct Case {
    int64_t src_stride, count, width, dst_stride;
  };
  for (const Case& c : std::vector<Case>{
           {40, 4, 33, 37}, {200, 1000, 192, 1000}, {40, 1, 33, 37}, {40, 0, 33, 37}}) {
    std::vector<uint16_t> src(static_cast<size_t>(std::max<int64_t>(c.count, 1) * c.src_stride));
    for (auto& v : src) v = static_cast<uint16_t>(rng());
    std::vector<uint16_t> want(static_cast<size_t>(std::max<int64_t>(c.count, 1) * c.dst_stride),
                               0xabcd);
    Buffer gdst = to_backend(gpu(), want);
    const Buffer gsrc = to_backend(gpu(), src);
    cpu().copy_rows_f16(src.data(), c.src_stride, c.count, c.width, want.data(), c.dst_stride);
    gpu().copy_rows_f16(gsrc.get<uint16_t>(), c.src_stride, c.count, c.width, gdst.get<uint16_t>(),
                        c.dst_stride);
    EXPECT_TRUE(all_equal(
        to_host<uint16_t>(gpu(), gdst, want.size()), want, c.dst_stride,
        "copy_rows_f16 count " + std::to_string(c.count) + " width " + std::to_string(c.width)));
  }

  // A prefill's scratch rows moved into shuffled blocks of 16 rows (the last one partial); a
  // width of 192 takes the vectorized kernel, 100 the per-run fallback.
  for (int64_t width : {192, 100}) {
    const int64_t rows = 100, block_rows = 16, num_blocks = (rows + block_rows - 1) / block_rows;
    std::vector<uint16_t> src(static_cast<size_t>(rows * width));
    for (auto& v : src) v = static_cast<uint16_t>(rng());
    std::vector<int64_t> order(static_cast<size_t>(num_blocks + 2));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<uint16_t> want(order.size() * block_rows * width, 0xabcd);
    Buffer gdst = to_backend(gpu(), want);
    const Buffer gsrc = to_backend(gpu(), src);
    std::vector<Backend::RowRun> cpu_runs, gpu_runs;
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t first = b * block_rows, count = std::min(block_rows, rows - first);
      const int64_t dst_offset = order[b] * block_rows * width;
      cpu_runs.push_back({src.data() + first * width, want.data() + dst_offset, count});
      gpu_runs.push_back(
          {gsrc.get<uint16_t>() + first * width, gdst.get<uint16_t>() + dst_offset, count});
    }
    cpu().copy_runs_f16(cpu_runs, width);
    gpu().copy_runs_f16(gpu_runs, width);
    EXPECT_TRUE(all_equal(to_host<uint16_t>(gpu(), gdst, want.size()), want, width,
                          "copy_runs_f16 width " + std::to_string(width)));
  }
}

}  // namespace
}  // namespace lightserve::kernels
