// Matrix multiply of f32 activations by weights in their file encoding (F32, F16, BF16, Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), with the fastest kernels this CPU has, chosen at
// run time.
//
// Numerics follow llama.cpp's CPU backend, so that greedy decoding matches it token for token:
// for Q4_0 / Q5_0 / Q8_0 weights activations are quantized per 32 values to Q8_0 (f16 scale
// amax/127), for Q4_1 / Q5_1 to Q8_1 (f16 scale and f16 scaled sum), and each output is the sum
// over blocks of scale_w · scale_x · integer dot (+ min_w · sum_x for Q4_1 / Q5_1); for the
// K-quants activations are quantized per 256 values to Q8_K (f32 scale, sums of 16) and each
// output is llama.cpp's vec_dot_qN_K_q8_K.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"

namespace lightserve::kernels::cpu {

// The CPU's resident form of a weight (see Backend::make_weight).
std::unique_ptr<Weight> make_weight(std::span<const WeightView> parts, const CpuFeatures& features);

// y[n × w.rows] = x[n × w.cols] · wᵀ. `w` must come from make_weight above.
void matmul(ThreadPool& pool, const CpuFeatures& features, const Weight& w, const float* x,
            int64_t n, float* y);

// out[i × w.cols ...] = row ids[i] of w, dequantized.
void embed(const Weight& w, std::span<const int32_t> ids, float* out);

}  // namespace lightserve::kernels::cpu
