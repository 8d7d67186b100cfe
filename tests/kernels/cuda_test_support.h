// Shared by the CUDA backend tests (cuda_backend_test.cpp: memory, matmul and element-wise ops;
// cuda_attention_test.cpp: attention and the lazy ratio): the default model's attention shape,
// host <-> backend copies, element-wise comparisons that print their worst error, and the fixture
// that skips where this build has no CUDA backend or no device is visible.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace lightserve::kernels::cuda_testing {

constexpr int kHeads = 9, kKvHeads = 3, kHeadDim = 64;
constexpr int64_t kKvWidth = kKvHeads * kHeadDim;
constexpr int64_t kQStride = kHeads * kHeadDim + 2 * kKvWidth;  // fused q+k+v rows
constexpr int64_t kOutStride = kHeads * kHeadDim;

// ---- host ↔ backend memory ----

template <typename T>
Buffer to_backend(Backend& b, const std::vector<T>& host) {
  Buffer buf;
  buf.reserve(b, static_cast<int64_t>(std::max<size_t>(host.size(), 1) * sizeof(T)));
  if (!host.empty()) {
    b.upload(buf.get<void>(), host.data(), static_cast<int64_t>(host.size() * sizeof(T)));
  }
  return buf;
}

template <typename T>
std::vector<T> to_host(Backend& b, const Buffer& buf, size_t count) {
  std::vector<T> host(count);
  if (count > 0) b.download(host.data(), buf.get<void>(), static_cast<int64_t>(count * sizeof(T)));
  return host;
}

// ---- comparisons ----

// |got − want| ≤ abs_tol + rel_tol·|want| element-wise (NaN fails; zero tolerances: equality).
// Prints the worst error of a toleranced check; on failure reports how many values are off and
// the first few as [row, column] of rows `width` wide.
template <typename T>
::testing::AssertionResult all_close(const std::vector<T>& got, const std::vector<T>& want,
                                     double abs_tol, double rel_tol, int64_t width,
                                     const std::string& what) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": " << got.size() << " values, expected " << want.size();
  }
  int64_t bad = 0;
  double worst = 0;
  size_t worst_at = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    const double err = g == w ? 0.0 : std::fabs(g - w);  // equal infinities are no error
    if (!(err <= worst)) {                               // NaN counts as the worst
      worst = std::isnan(err) ? INFINITY : err;
      worst_at = i;
    }
    if (!(err <= abs_tol + rel_tol * std::fabs(w))) {
      if (bad < 5) {
        first << "\n    [" << i / width << ", " << i % width << "] got " << +got[i] << " want "
              << +want[i];
      }
      ++bad;
    }
  }
  if (abs_tol > 0 || rel_tol > 0) {
    std::printf("  %-64s max |err| %.3g at [%lld, %lld] (tol %.3g + %.3g·|want|)\n", what.c_str(),
                worst, static_cast<long long>(worst_at / width),
                static_cast<long long>(worst_at % width), abs_tol, rel_tol);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << got.size() << " values off (tolerance " << abs_tol
         << " + " << rel_tol << "·|want|); first:" << first.str();
}

template <typename T>
::testing::AssertionResult all_equal(const std::vector<T>& got, const std::vector<T>& want,
                                     int64_t width, const std::string& what) {
  return all_close(got, want, 0.0, 0.0, width, what);
}

inline double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

inline float round_f16(float x) {
  return fp16_to_fp32(fp32_to_fp16(x));
}

inline std::vector<float> random_normal(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---- fixture ----

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_compiled()) GTEST_SKIP() << "this build has no CUDA backend (nvcc not found)";
    std::string why;
    gpu_ = make_cuda_backend(0, &why);
    if (gpu_ == nullptr) GTEST_SKIP() << "no CUDA backend: " << why;
    cpu_ = make_cpu_backend(0);
  }

  Backend& gpu() { return *gpu_; }
  Backend& cpu() { return *cpu_; }

  std::unique_ptr<Backend> gpu_, cpu_;
};

}  // namespace lightserve::kernels::cuda_testing
