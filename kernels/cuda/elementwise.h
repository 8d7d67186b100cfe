// The CUDA backend's element-wise kernels (elementwise.cu), as launchers: each issues one kernel
// on `stream` and checks the launch. Plain ops mirror the CPU backend's (kernels/cpu), and the
// fused forms compute bit for bit what their unfused sequence computes on the device (same
// per-element code, same reduction order), so fusion changes launch counts, not numerics.
// Not a public header.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/row_store_plan.h"  // QueuedStore, RowStore

namespace lightserve::kernels::cuda {

constexpr int kElementwiseThreads = 256;

// dst[r][c] = src[r][c] as f16 (or bf16), round to nearest even (as the CPU), for r < n,
// c < width: KV stores, and matmul inputs (f16).
void launch_f32_to_kv(cudaStream_t stream, unsigned blocks, const float* src, int64_t src_stride,
                      int64_t n, int64_t width, uint16_t* dst, int64_t dst_stride, bool bf16);

// One block per queued store; `stores` is device memory.
void launch_store_queued(cudaStream_t stream, const QueuedStore* stores, int64_t count,
                         int64_t width);

// out[i][c] = table[ids[i]][c] as f32 (ids: device memory).
void launch_gather_rows(cudaStream_t stream, unsigned blocks, const __half* table, int64_t cols,
                        const int32_t* ids, int64_t count, float* out);

// y = x / sqrt(mean(x²) + eps) · weight per row of `dim` (one block per row, grid-stride).
// Fused forms: with `residual` non-null, x += residual first (written back to x: the residual
// stream's add); with `y16` non-null, y is also written as f16 rows (the next matmul's input).
// x, y and residual may alias each other: every thread rewrites only the values it read.
void launch_rms_norm(cudaStream_t stream, unsigned blocks, float* x, const float* residual,
                     const float* weight, int64_t n, int64_t dim, float eps, float* y, __half* y16);

// Backend::rope's arguments as the device takes them (positions: device memory).
struct RopeArgs {
  float* x;
  const int32_t* positions;
  int64_t n;
  int64_t heads;
  int64_t head_dim;
  int64_t row_stride;
  float theta_scale;  // freq_base^(−2/head_dim), computed on the host as the CPU does
  bool neox;
  const float* freq_factors;
};
void launch_rope(cudaStream_t stream, unsigned blocks, const RopeArgs& rope);

// The rope, then stores from the rotated rows, in one kernel: a block per rope row rotates the
// row, waits for its threads (__syncthreads), then writes the stores
// stores[row_begin[r] .. row_begin[r + 1]) of that row. A row is written by its block only and
// a store reads its own row only, so no other synchronization is needed. stores and row_begin
// (n + 1 entries): device memory; destinations must not overlap any rope row.
void launch_rope_then_store(cudaStream_t stream, unsigned blocks, const RopeArgs& rope,
                            const RowStore* stores, const int32_t* row_begin, int64_t width);

// out[r][j] = silu(gate_up[r][j]) · gate_up[r][ff + j]; with `out16` non-null also as f16 rows.
void launch_swiglu(cudaStream_t stream, unsigned blocks, const float* gate_up, int64_t n,
                   int64_t ff, float* out, __half* out16);

// y += x.
void launch_add(cudaStream_t stream, unsigned blocks, float* y, const float* x, int64_t count);

// y[r·row_stride + j] += bias[j].
void launch_add_bias(cudaStream_t stream, unsigned blocks, float* y, const float* bias, int64_t n,
                     int64_t width, int64_t row_stride);

// ids[r] = std::max_element's index over row r (rows `width` apart), as sampling::argmax: the
// first of the largest values; NaN never replaces a value, so a row starting with NaN gives 0
// and later NaNs are skipped. One block per row; ids: device memory.
void launch_argmax_rows(cudaStream_t stream, const float* x, int64_t n, int64_t width,
                        int32_t* ids);

}  // namespace lightserve::kernels::cuda
