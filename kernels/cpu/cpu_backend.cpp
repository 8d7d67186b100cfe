// The CPU backend: matmul and embedding from matmul.cpp, element-wise ops and attention from the
// ISA-specific ops tables, all on one thread pool.
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <thread>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"

namespace lightserve::kernels {
namespace cpu {

void RopeTable::ensure(float base, int64_t dim, int64_t positions, const float* freq_factors) {
  const int64_t half = dim / 2;
  const bool same_factors =
      freq_factors == nullptr
          ? factors.empty()
          : static_cast<int64_t>(factors.size()) == half &&
                std::memcmp(factors.data(), freq_factors, static_cast<size_t>(half) * 4) == 0;
  if (base == freq_base && dim == head_dim && same_factors && positions <= num_positions) return;
  if (base != freq_base || dim != head_dim || !same_factors) {
    cos_sin.clear();
    num_positions = 0;
    if (freq_factors == nullptr) {
      factors.clear();
    } else {
      factors.assign(freq_factors, freq_factors + half);
    }
  }
  freq_base = base;
  head_dim = dim;
  const int64_t target = std::max(positions, num_positions * 2);
  cos_sin.resize(static_cast<size_t>(target * dim));
  // llama.cpp: θ starts at the position and is multiplied by base^(−2/dim) for each pair, in f32;
  // with frequency factors, pair i's angle is θ / factors[i] (ggml_rope_cache_init).
  const float theta_scale = std::pow(base, -2.0f / static_cast<float>(dim));
  for (int64_t p = num_positions; p < target; ++p) {
    float theta = static_cast<float>(p);
    float* cs = cos_sin.data() + p * dim;
    for (int64_t i = 0; i < half; ++i) {
      const float angle = factors.empty() ? theta : theta / factors[static_cast<size_t>(i)];
      cs[2 * i] = std::cos(angle);
      cs[2 * i + 1] = std::sin(angle);
      theta *= theta_scale;
    }
  }
  num_positions = target;
}

const OpsTable& ops_for(const CpuFeatures& features) {
  if (features.avx512 && features.avx512_bf16) return kOpsAvx512Bf16;
  if (features.avx512) return kOpsAvx512;
  if (features.avx2) return kOpsAvx2;
  return kOpsGeneric;
}

namespace {

// Host memory for the backend's buffers: 64-byte aligned for the SIMD kernels, pages left
// untouched until used. Buffers of 4 MiB and more (the KV arena above all) are 2 MiB aligned
// and advised as transparent huge pages (MADV_HUGEPAGE; a no-op where THP is off): a decode
// step of 64 sequences reads ~240 MB of KV pages scattered over the arena, one TLB miss per
// 4 KiB page on small pages. Freed with std::free.
void* allocate_host(int64_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const auto size = static_cast<size_t>(std::max<int64_t>(bytes, 1));
  const size_t align = size >= 2 * kHugePage ? kHugePage : 64;
  const size_t rounded = (size + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded);
  if (p == nullptr) throw std::bad_alloc();
  if (align == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);
  return p;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads)
      : features_(CpuFeatures::detect()),
        ops_(ops_for(features_)),
        pool_(num_threads > 0
                  ? num_threads
                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))) {}

  std::string description() const override {
    return "cpu (" + features_.describe() + ", " + std::to_string(pool_.num_threads()) +
           " threads)";
  }

  bool host_memory() const override { return true; }

  void* allocate(int64_t bytes) override { return allocate_host(bytes); }
  void deallocate(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, int64_t bytes) override {
    std::memcpy(dst, src, static_cast<size_t>(bytes));
  }
  void download(void* dst, const void* src, int64_t bytes) override {
    std::memcpy(dst, src, static_cast<size_t>(bytes));
  }
  void copy(void* dst, const void* src, int64_t bytes) override {
    std::memcpy(dst, src, static_cast<size_t>(bytes));
  }

  std::unique_ptr<Weight> make_weight(std::span<const WeightView> parts) override {
    return cpu::make_weight(parts, features_);
  }

  void matmul(const Weight& w, const float* x, int64_t n, float* y) override {
    cpu::matmul(pool_, features_, w, x, n, y);
  }

  void embed(const Weight& table, std::span<const int32_t> ids, float* out) override {
    cpu::embed(table, ids, out);
  }

  void rms_norm(const float* x, const float* weight, int64_t n, int64_t dim, float eps,
                float* y) override {
    for_rows(n, dim, [&](int64_t r0, int64_t r1) {
      ops_.rms_norm(x + r0 * dim, weight, r1 - r0, dim, eps, y + r0 * dim);
    });
  }

  void rope(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
            int64_t row_stride, const RopeParams& params) override {
    int32_t max_pos = 0;
    for (int32_t p : positions) max_pos = std::max(max_pos, p);
    rope_table_.ensure(params.freq_base, head_dim, static_cast<int64_t>(max_pos) + 1,
                       params.freq_factors);
    for_rows(static_cast<int64_t>(positions.size()), heads * head_dim, [&](int64_t r0, int64_t r1) {
      ops_.rope(x + r0 * row_stride, positions.subspan(r0, r1 - r0), heads, head_dim, row_stride,
                rope_table_, params.neox);
    });
  }

  void add_bias(float* y, const float* bias, int64_t n, int64_t width,
                int64_t row_stride) override {
    ops_.add_bias(y, bias, n, width, row_stride);
  }

  void swiglu(const float* gate_up, int64_t n, int64_t ff, float* out) override {
    for_rows(n, 2 * ff, [&](int64_t r0, int64_t r1) {
      ops_.swiglu(gate_up + r0 * 2 * ff, r1 - r0, ff, out + r0 * ff);
    });
  }

  void add(float* y, const float* x, int64_t count) override {
    constexpr int64_t kRow = 64;  // 64 floats a "row", so that chunks stay whole vectors
    for_rows((count + kRow - 1) / kRow, kRow, [&](int64_t r0, int64_t r1) {
      ops_.add(y + r0 * kRow, x + r0 * kRow, std::min(count, r1 * kRow) - r0 * kRow);
    });
  }

  void store_kv(const float* src, int64_t src_stride, int64_t n, int64_t width, uint16_t* dst,
                int64_t dst_stride, DType type) override {
    ops_.store_kv(src, src_stride, n, width, dst, dst_stride, type);
  }

  void attention(const float* q, std::span<const AttentionSeq> seqs, const AttentionShape& shape,
                 float* out) override {
    ops_.attention(pool_, q, seqs, shape, out);
  }

  float lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n, int32_t w_last,
                   int32_t sink, int32_t window, const AttentionShape& shape, LazyScore score,
                   float* head_ratios) override {
    return ops_.lazy_ratio(q, lse, kv, n, w_last, sink, window, shape, score, head_ratios);
  }

  void copy_rows_f16(const uint16_t* src, int64_t src_stride, int64_t count, int64_t width,
                     uint16_t* dst, int64_t dst_stride) override {
    for (int64_t r = 0; r < count; ++r) {
      std::memcpy(dst + r * dst_stride, src + r * src_stride, static_cast<size_t>(width) * 2);
    }
  }

  void copy_runs_f16(std::span<const RowRun> runs, int64_t width) override {
    for (const RowRun& r : runs) {
      std::memcpy(r.dst, r.src, static_cast<size_t>(r.rows * width) * 2);
    }
  }

 private:
  // Runs fn(r0, r1) over rows [0, n) of an element-wise op (`row_elements` floats each), split
  // over the pool when the rows are enough to repay a join, else on this thread. Each row is
  // computed by the same code either way (identical results); at a batch of 64 sequences these
  // ops were ~6% of a step on one thread, i.e. ~12% of it on two with the worker waiting.
  void for_rows(int64_t n, int64_t row_elements, const std::function<void(int64_t, int64_t)>& fn) {
    constexpr int64_t kMinChunkElements = 8192;
    const int64_t grain =
        std::max<int64_t>(1, kMinChunkElements / std::max<int64_t>(1, row_elements));
    if (pool_.num_threads() == 1 || n < 2 * grain) {
      if (n > 0) fn(0, n);
      return;
    }
    pool_.parallel_for(n, grain, fn);
  }

  CpuFeatures features_;
  const OpsTable& ops_;
  ThreadPool pool_;
  RopeTable rope_table_;
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int num_threads) {
  return std::make_unique<cpu::CpuBackend>(num_threads);
}

}  // namespace lightserve::kernels
