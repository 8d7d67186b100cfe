// Element-wise ops and attention of the CPU backend. One portable source (ops_impl.inc) is
// compiled once per ISA level (ops_generic.cpp, ops_avx2.cpp, ops_avx512.cpp, ops_avx512bf16.cpp);
// the backend picks a table at run time. Private to kernels/cpu.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"

namespace lightserve::kernels::cpu {

// cos/sin of pos · freq_base^(−2i/head_dim) / factors[i] for i < head_dim/2, computed as
// llama.cpp does (θ multiplied by the scale step by step, in f32, then divided by the pair's
// factor), for positions [0, num_positions).
struct RopeTable {
  float freq_base = 0.0f;
  int64_t head_dim = 0;
  int64_t num_positions = 0;
  std::vector<float> factors;  // head_dim/2 values; empty: all 1
  std::vector<float> cos_sin;  // [pos][i] → (cos, sin)
  // freq_factors: head_dim/2 values, or null.
  void ensure(float base, int64_t dim, int64_t positions, const float* freq_factors = nullptr);
};

struct OpsTable {
  const char* level;
  void (*rms_norm)(const float* x, const float* weight, int64_t n, int64_t dim, float eps,
                   float* y);
  // neox: pairs (i, i + head_dim/2), else (2i, 2i+1); pair i takes the table's angle i.
  void (*rope)(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
               int64_t row_stride, const RopeTable& table, bool neox);
  void (*swiglu)(const float* gate_up, int64_t n, int64_t ff, float* out);
  void (*add)(float* y, const float* x, int64_t count);
  void (*add_bias)(float* y, const float* bias, int64_t n, int64_t width, int64_t row_stride);
  void (*store_kv)(const float* src, int64_t src_stride, int64_t n, int64_t width, uint16_t* dst,
                   int64_t dst_stride, DType type);
  void (*attention)(ThreadPool& pool, const float* q, std::span<const AttentionSeq> seqs,
                    const AttentionShape& shape, float* out);
  float (*lazy_ratio)(const float* q, const float* lse, const KvView& kv, int32_t n, int32_t w_last,
                      int32_t sink, int32_t window, const AttentionShape& shape, LazyScore score,
                      float* head_ratios);
};

extern const OpsTable kOpsGeneric;
extern const OpsTable kOpsAvx2;
extern const OpsTable kOpsAvx512;
extern const OpsTable kOpsAvx512Bf16;  // avx512 + AVX-512 BF16 conversions (bf16 KV)

const OpsTable& ops_for(const CpuFeatures& features);

}  // namespace lightserve::kernels::cpu
