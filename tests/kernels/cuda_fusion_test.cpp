// The CUDA backend's launch fusion (kernels/cuda/cuda_backend.cu's header) and its device argmax:
// the op sequences of a decode layer run on a fused backend (the default), on one with
// set_fusion(false) (one launch per op, the path before fusion) and on the CPU. Fused and
// unfused must agree bit for bit (the fused kernels run the same per-element code); both must
// match the CPU within the tolerances of cuda_backend_test.cpp. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "tests/kernels/cuda_test_support.h"

namespace lightserve::kernels {
namespace {

using namespace cuda_testing;  // NOLINT: the shared helpers and fixture

class CudaFusionTest : public CudaBackendTest {
 protected:
  void SetUp() override {
    CudaBackendTest::SetUp();
    if (IsSkipped()) return;
    std::string why;
    unfused_ = make_cuda_backend(0, &why);
    ASSERT_NE(unfused_, nullptr) << why;
    unfused_->set_fusion(false);
    gpu().set_fusion(true);
  }
  Backend& unfused() { return *unfused_; }
  std::unique_ptr<Backend> unfused_;
};

// An f16 weight [rows × cols] with values of ~1/sqrt(cols).
std::vector<uint16_t> random_f16_weight(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f / std::sqrt(static_cast<float>(cols)));
  std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = fp32_to_fp16(dist(rng));
  return w;
}

// The element-wise tail of a decode layer: x += o; h = norm(x); gate_up = h·Wgu; f =
// swiglu(gate_up); o2 = f·Wd; x += o2; h2 = norm2(x) (the next layer's norm, in place in h2's
// buffer). Everything it wrote, on the host.
struct TailResult {
  std::vector<float> x, h, gate_up, f, o2, h2;
};

TailResult run_tail(Backend& b, int64_t n, int64_t d, int64_t ff, const std::vector<float>& x0,
                    const std::vector<float>& o, const std::vector<float>& norm1,
                    const std::vector<float>& norm2, const std::vector<uint16_t>& gate_up_w,
                    const std::vector<uint16_t>& down_w) {
  const WeightView gu_view{DType::kF16, 2 * ff, d, gate_up_w.data()};
  const WeightView down_view{DType::kF16, d, ff, down_w.data()};
  auto gu = b.make_weight({&gu_view, 1});
  auto down = b.make_weight({&down_view, 1});
  Buffer x = to_backend(b, x0), go = to_backend(b, o), n1 = to_backend(b, norm1),
         n2 = to_backend(b, norm2);
  Buffer h, gate_up, f, o2, h2;
  h.reserve<float>(b, n * d);
  gate_up.reserve<float>(b, n * 2 * ff);
  f.reserve<float>(b, n * ff);
  o2.reserve<float>(b, n * d);
  b.add(x.get<float>(), go.get<float>(), n * d);
  b.rms_norm(x.get<float>(), n1.get<float>(), n, d, 1e-5f, h.get<float>());
  b.matmul(*gu, h.get<float>(), n, gate_up.get<float>());
  b.swiglu(gate_up.get<float>(), n, ff, f.get<float>());
  b.matmul(*down, f.get<float>(), n, o2.get<float>());
  b.add(x.get<float>(), o2.get<float>(), n * d);
  h2.assign(b, x.get<float>(), n * d * static_cast<int64_t>(sizeof(float)));
  b.rms_norm(h2.get<float>(), n2.get<float>(), n, d, 1e-5f, h2.get<float>());  // in place
  TailResult r;
  r.x = to_host<float>(b, x, static_cast<size_t>(n * d));
  r.h = to_host<float>(b, h, static_cast<size_t>(n * d));
  r.gate_up = to_host<float>(b, gate_up, static_cast<size_t>(n * 2 * ff));
  r.f = to_host<float>(b, f, static_cast<size_t>(n * ff));
  r.o2 = to_host<float>(b, o2, static_cast<size_t>(n * d));
  r.h2 = to_host<float>(b, h2, static_cast<size_t>(n * d));
  return r;
}

TEST_F(CudaFusionTest, LayerTailEqualsUnfusedBitForBitAndMatchesCpu) {
  std::mt19937 rng(31);
  for (int64_t d : {576, 4096}) {
    const int64_t ff = d == 576 ? 1536 : 2048;  // 8B's 14336 adds only time
    const auto gate_up_w = random_f16_weight(2 * ff, d, rng);
    const auto down_w = random_f16_weight(d, ff, rng);
    const auto norm1 = random_normal(static_cast<size_t>(d), rng);
    const auto norm2 = random_normal(static_cast<size_t>(d), rng);
    for (int64_t n : {1, 5, 64, 300}) {
      const auto x0 = random_normal(static_cast<size_t>(n * d), rng, 3.0f);
      const auto o = random_normal(static_cast<size_t>(n * d), rng);
      const TailResult fused = run_tail(gpu(), n, d, ff, x0, o, norm1, norm2, gate_up_w, down_w);
      const TailResult plain =
          run_tail(unfused(), n, d, ff, x0, o, norm1, norm2, gate_up_w, down_w);
      const TailResult want = run_tail(cpu(), n, d, ff, x0, o, norm1, norm2, gate_up_w, down_w);
      const std::string what = "tail d " + std::to_string(d) + " n " + std::to_string(n);
      EXPECT_TRUE(all_equal(fused.x, plain.x, d, what + " x fused vs unfused"));
      EXPECT_TRUE(all_equal(fused.h, plain.h, d, what + " h fused vs unfused"));
      EXPECT_TRUE(
          all_equal(fused.gate_up, plain.gate_up, 2 * ff, what + " gate_up fused vs unfused"));
      EXPECT_TRUE(all_equal(fused.f, plain.f, ff, what + " swiglu fused vs unfused"));
      EXPECT_TRUE(all_equal(fused.o2, plain.o2, d, what + " down fused vs unfused"));
      EXPECT_TRUE(all_equal(fused.h2, plain.h2, d, what + " h2 fused vs unfused"));
      // Against the CPU: the first add and norm are exact up to the f64 sum's order; after the
      // matmuls (f16 activations on the GPU) the relative error of cuda_backend_test's f16 case.
      std::vector<float> x1(x0.size());
      for (size_t i = 0; i < x0.size(); ++i) x1[i] = x0[i] + o[i];
      std::vector<float> h_cpu(x0.size());
      cpu().rms_norm(x1.data(), norm1.data(), n, d, 1e-5f, h_cpu.data());
      EXPECT_TRUE(all_close(fused.h, h_cpu, 1e-30, 1e-6, d, what + " h vs cpu"));
      EXPECT_TRUE(all_close(fused.gate_up, want.gate_up, 2e-3 * max_abs(want.gate_up), 0, 2 * ff,
                            what + " gate_up vs cpu"));
      EXPECT_TRUE(
          all_close(fused.f, want.f, 5e-3 * max_abs(want.f), 0, ff, what + " swiglu vs cpu"));
      EXPECT_TRUE(
          all_close(fused.o2, want.o2, 1e-2 * max_abs(want.o2), 0, d, what + " down vs cpu"));
      EXPECT_TRUE(all_close(fused.x, want.x, 1e-2 * max_abs(want.o2), 0, d, what + " x vs cpu"));
      EXPECT_TRUE(all_close(fused.h2, want.h2, 1e-2 * max_abs(want.h2), 0, d, what + " h2 vs cpu"));
    }
  }
}

// A deferred add must be issued by whatever op comes next when that op does not take it: a
// download, a norm of other rows or of fewer rows, a copy, a deallocation, a matmul.
TEST_F(CudaFusionTest, DeferredAddIsIssuedByAnyOtherOp) {
  std::mt19937 rng(32);
  const int64_t n = 6, d = 576;
  const auto y0 = random_normal(static_cast<size_t>(n * d), rng);
  const auto x = random_normal(static_cast<size_t>(n * d), rng);
  const auto w = random_normal(static_cast<size_t>(d), rng);
  std::vector<float> sum(y0.size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = y0[i] + x[i];
  std::vector<float> norm_first_rows(static_cast<size_t>(2 * d));
  cpu().rms_norm(sum.data(), w.data(), 2, d, 1e-5f, norm_first_rows.data());
  const Buffer gx = to_backend(gpu(), x), gw = to_backend(gpu(), w);

  {  // then a download
    Buffer gy = to_backend(gpu(), y0);
    gpu().add(gy.get<float>(), gx.get<float>(), n * d);
    EXPECT_TRUE(all_equal(to_host<float>(gpu(), gy, sum.size()), sum, d, "add, download"));
  }
  {  // then a norm of the first two rows only (not the add's rows: no fusion)
    Buffer gy = to_backend(gpu(), y0), out;
    out.reserve<float>(gpu(), 2 * d);
    gpu().add(gy.get<float>(), gx.get<float>(), n * d);
    gpu().rms_norm(gy.get<float>(), gw.get<float>(), 2, d, 1e-5f, out.get<float>());
    EXPECT_TRUE(all_equal(to_host<float>(gpu(), gy, sum.size()), sum, d, "add, short norm: y"));
    EXPECT_TRUE(all_close(to_host<float>(gpu(), out, 2 * d), norm_first_rows, 1e-30, 1e-6, d,
                          "add, short norm: out"));
  }
  {  // then a copy of y, and a deallocation of another buffer
    Buffer gy = to_backend(gpu(), y0), copy, other;
    other.reserve<float>(gpu(), 16);
    gpu().add(gy.get<float>(), gx.get<float>(), n * d);
    other.reset();
    copy.assign(gpu(), gy.get<float>(), n * d * static_cast<int64_t>(sizeof(float)));
    EXPECT_TRUE(all_equal(to_host<float>(gpu(), copy, sum.size()), sum, d, "add, copy"));
  }
  {  // then a store_kv of y's rows (queued): the add must land first
    Buffer gy = to_backend(gpu(), y0), cache;
    cache.reserve<uint16_t>(gpu(), 2 * d);
    gpu().add(gy.get<float>(), gx.get<float>(), n * d);
    gpu().store_kv(gy.get<float>(), d, 2, d, cache.get<uint16_t>(), d, DType::kF16);
    std::vector<uint16_t> want(static_cast<size_t>(2 * d));
    cpu().store_kv(sum.data(), d, 2, d, want.data(), d, DType::kF16);
    EXPECT_TRUE(all_equal(to_host<uint16_t>(gpu(), cache, want.size()), want, d, "add, store"));
  }
}

// rope over fused q+k+v rows, then the K and V rows stored one or two rows per call (as a
// decode stores them), into f16 or bf16 caches at scattered rows; and a variant with one store
// whose source is outside the rope's rows (the fused kernel cannot take it: rope and stores
// then run one after the other).
struct RopeStoreResult {
  std::vector<float> qkv;
  std::vector<uint16_t> k_cache, v_cache;
};

RopeStoreResult run_rope_store(Backend& b, const std::vector<float>& qkv0,
                               const std::vector<int32_t>& positions, DType type,
                               bool outside_source, const std::vector<float>& outside) {
  const auto n = static_cast<int64_t>(positions.size());
  const int64_t cache_rows = 3 * n + 2;
  Buffer qkv = to_backend(b, qkv0), other = to_backend(b, outside), k_cache, v_cache;
  const std::vector<uint16_t> zeros(static_cast<size_t>(cache_rows * kKvWidth), 0);
  k_cache = to_backend(b, zeros);
  v_cache = to_backend(b, zeros);
  RopeParams params;
  params.freq_base = 500000.0f;
  b.rope(qkv.get<float>(), positions, kHeads + kKvHeads, kHeadDim, kQStride, params);
  float* rows = qkv.get<float>();
  for (int64_t r = 0; r < n;) {
    const int64_t count = (r % 3 == 1 && r + 1 < n) ? 2 : 1;  // some calls store two rows
    const int64_t slot = 3 * r;  // rows apart: a store's rows never meet another's
    const float* k = rows + r * kQStride + kHeads * kHeadDim;
    b.store_kv(k, kQStride, count, kKvWidth, k_cache.get<uint16_t>() + slot * kKvWidth, kKvWidth,
               type);
    b.store_kv(k + kKvWidth, kQStride, count, kKvWidth, v_cache.get<uint16_t>() + slot * kKvWidth,
               kKvWidth, type);
    r += count;
  }
  if (outside_source) {
    b.store_kv(other.get<float>(), kKvWidth, 1, kKvWidth,
               k_cache.get<uint16_t>() + (cache_rows - 1) * kKvWidth, kKvWidth, type);
  }
  RopeStoreResult out;
  out.qkv = to_host<float>(b, qkv, qkv0.size());
  out.k_cache = to_host<uint16_t>(b, k_cache, zeros.size());
  out.v_cache = to_host<uint16_t>(b, v_cache, zeros.size());
  return out;
}

std::vector<float> kv_values(const std::vector<uint16_t>& bits, DType type) {
  std::vector<float> f(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    f[i] = type == DType::kBF16 ? bf16_to_fp32(bits[i]) : fp16_to_fp32(bits[i]);
  }
  return f;
}

TEST_F(CudaFusionTest, RopeThenStoresEqualUnfusedBitForBitAndMatchCpu) {
  std::mt19937 rng(33);
  for (DType type : {DType::kF16, DType::kBF16}) {
    for (int64_t n : {1, 3, 64}) {
      for (bool outside : {false, true}) {
        std::vector<int32_t> positions(static_cast<size_t>(n));
        std::uniform_int_distribution<int32_t> pos(0, 32767);
        for (auto& p : positions) p = pos(rng);
        const auto qkv0 = random_normal(static_cast<size_t>(n * kQStride), rng);
        const auto other = random_normal(static_cast<size_t>(kKvWidth), rng);
        const auto fused = run_rope_store(gpu(), qkv0, positions, type, outside, other);
        const auto plain = run_rope_store(unfused(), qkv0, positions, type, outside, other);
        const auto want = run_rope_store(cpu(), qkv0, positions, type, outside, other);
        const std::string what = std::string(type == DType::kBF16 ? "bf16" : "f16") + " n " +
                                 std::to_string(n) + (outside ? " + outside store" : "");
        EXPECT_TRUE(all_equal(fused.qkv, plain.qkv, kQStride, what + " qkv fused vs unfused"));
        EXPECT_TRUE(
            all_equal(fused.k_cache, plain.k_cache, kKvWidth, what + " K fused vs unfused"));
        EXPECT_TRUE(
            all_equal(fused.v_cache, plain.v_cache, kKvWidth, what + " V fused vs unfused"));
        EXPECT_TRUE(all_close(fused.qkv, want.qkv, 1e-5, 1e-5, kQStride, what + " qkv vs cpu"));
        // Values are stored exactly as the CPU stores them; keys are rotated values whose
        // cosf/sinf may differ by an ulp, so at most one rounding step of the cache type apart.
        const double step = type == DType::kBF16 ? 1.0 / 128 : 1.0 / 1024;
        EXPECT_TRUE(all_equal(fused.v_cache, want.v_cache, kKvWidth, what + " V vs cpu"));
        EXPECT_TRUE(all_close(kv_values(fused.k_cache, type), kv_values(want.k_cache, type), 1e-6,
                              step, kKvWidth, what + " K vs cpu"));
      }
    }
  }
}

TEST_F(CudaFusionTest, ArgmaxRowsIsMaxElement) {
  std::mt19937 rng(34);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t width : {1, 7, 1000, 49152, 128256}) {
    for (int64_t n : {1, 5, 64}) {
      std::vector<float> x = random_normal(static_cast<size_t>(n * width), rng);
      for (int64_t r = 0; r < n; ++r) {
        float* row = x.data() + r * width;
        switch (r % 5) {
          case 1:  // the maximum twice: the first one wins
            row[width / 2] = 10.0f;
            row[width - 1] = 10.0f;
            row[width / 3] = 10.0f;
            break;
          case 2:  // NaN first: std::max_element keeps it (index 0)
            row[0] = nan;
            row[width - 1] = 50.0f;
            break;
          case 3:  // NaNs later are skipped; -inf everywhere else
            std::fill(row, row + width, -inf);
            row[width / 2] = nan;
            break;
          case 4:  // ties across thread strides
            for (int64_t i = 0; i < width; i += 37) row[i] = 20.0f;
            break;
          default:
            break;
        }
      }
      std::vector<int32_t> want(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) {
        const float* row = x.data() + r * width;
        want[r] = static_cast<int32_t>(std::max_element(row, row + width) - row);
      }
      for (Backend* b : {&gpu(), &unfused(), &cpu()}) {
        const Buffer gx = to_backend(*b, x);
        std::vector<int32_t> got(static_cast<size_t>(n), -1);
        b->argmax_rows(gx.get<float>(), n, width, got.data());
        EXPECT_TRUE(all_equal(got, want, n,
                              b->description() + " argmax width " + std::to_string(width) + " n " +
                                  std::to_string(n)));
      }
    }
  }
}

}  // namespace
}  // namespace lightserve::kernels
