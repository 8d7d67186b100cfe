// The CUDA backend's element-wise kernels and their fused forms (elementwise.h).
#include <cuda_fp16.h>

#include <cmath>
#include <limits>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/kv_type.cuh"

namespace lightserve::kernels::cuda {
namespace {

constexpr int kThreads = kElementwiseThreads;
constexpr int kWarp = 32;

// Index of this thread in a 1-D grid-stride loop, and the loop's stride (64-bit: n · width can
// pass 2³¹).
__device__ inline int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

__global__ void f32_rows_to_kv(const float* __restrict__ src, int64_t src_stride, int64_t n,
                               int64_t width, uint16_t* __restrict__ dst, int64_t dst_stride,
                               bool bf16) {
  const int64_t total = n * width;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / width, c = i - r * width;
    dst[r * dst_stride + c] = float_to_kv_bits(src[r * src_stride + c], bf16);
  }
}

// One block per queued store.
__global__ void store_queued(const QueuedStore* __restrict__ stores, int64_t width) {
  const QueuedStore s = stores[blockIdx.x];
  for (int64_t i = threadIdx.x; i < s.rows * width; i += blockDim.x) {
    const int64_t r = i / width, c = i - r * width;
    s.dst[r * s.dst_stride + c] = float_to_kv_bits(s.src[r * s.src_stride + c], s.bf16 != 0);
  }
}

__global__ void gather_rows(const __half* __restrict__ table, int64_t cols,
                            const int32_t* __restrict__ ids, int64_t count,
                            float* __restrict__ out) {
  const int64_t total = count * cols;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / cols, c = i - r * cols;
    out[i] = __half2float(table[static_cast<int64_t>(ids[r]) * cols + c]);
  }
}

__device__ inline double warp_sum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// As the CPU: squares in f32 summed in f64, then y = (x · scale) · weight. The residual's add is
// one f32 addition per value, as add_in_place's; the loops over i are the same in both passes,
// so a thread writes x[i] and y[i] only at indices it has itself read (x, y, residual may alias).
__global__ void rms_norm_rows(float* x, const float* residual, const float* __restrict__ weight,
                              int64_t n, int64_t dim, float eps, float* y, __half* y16) {
  __shared__ double warp_sums[kThreads / kWarp];
  __shared__ float row_scale;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int warp = static_cast<int>(threadIdx.x) / kWarp;
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    float* xr = x + r * dim;
    float* yr = y + r * dim;
    double sum = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = xr[i];
      if (residual != nullptr) {
        v = __fadd_rn(v, residual[r * dim + i]);
        xr[i] = v;
      }
      sum += static_cast<double>(__fmul_rn(v, v));
    }
    sum = warp_sum(sum);
    if (lane == 0) warp_sums[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0;
      for (int w = 0; w < kThreads / kWarp; ++w) total += warp_sums[w];
      const float mean = static_cast<float>(total / static_cast<double>(dim));
      row_scale = 1.0f / sqrtf(mean + eps);
    }
    __syncthreads();
    const float scale = row_scale;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float out = __fmul_rn(__fmul_rn(xr[i], scale), weight[i]);
      yr[i] = out;
      if (y16 != nullptr) y16[r * dim + i] = __float2half_rn(out);
    }
    __syncthreads();  // warp_sums and row_scale are rewritten for the next row
  }
}

// Rotates pair `pair` of head h of rope row r by positions[r] · theta_scale^pair /
// freq_factors[pair]: values (2i, 2i+1), or (i, i + head_dim/2) when neox. θ is built as the
// CPU's RopeTable builds it (the position times theta_scale, i times, in f32, then divided by the
// factor), so the angles are bit-identical; only cosf/sinf may differ from the host's by an ulp.
// The one rotation of the plain and the fused kernel.
__device__ inline void rotate_pair(const RopeArgs& a, int64_t r, int64_t h, int64_t pair) {
  const int64_t half = a.head_dim / 2;
  float theta = static_cast<float>(a.positions[r]);
  for (int64_t k = 0; k < pair; ++k) theta *= a.theta_scale;
  if (a.freq_factors != nullptr) theta = __fdiv_rn(theta, a.freq_factors[pair]);
  const float c = cosf(theta), s = sinf(theta);
  float* head = a.x + r * a.row_stride + h * a.head_dim;
  float* v0 = a.neox ? head + pair : head + 2 * pair;
  float* v1 = a.neox ? head + pair + half : head + 2 * pair + 1;
  const float x0 = *v0, x1 = *v1;
  *v0 = x0 * c - x1 * s;
  *v1 = x0 * s + x1 * c;
}

__global__ void rope_rows(RopeArgs a) {
  const int64_t half = a.head_dim / 2;
  const int64_t per_row = a.heads * half;
  const int64_t total = a.n * per_row;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / per_row, rest = i - r * per_row;
    const int64_t h = rest / half, pair = rest - h * half;
    rotate_pair(a, r, h, pair);
  }
}

// A block per rope row (grid-stride over rows; the loop bound is uniform over the block, so
// every thread reaches the barrier).
__global__ void rope_rows_then_store(RopeArgs a, const RowStore* __restrict__ stores,
                                     const int32_t* __restrict__ row_begin, int64_t width) {
  const int64_t half = a.head_dim / 2;
  const int64_t per_row = a.heads * half;
  for (int64_t r = blockIdx.x; r < a.n; r += gridDim.x) {
    for (int64_t i = threadIdx.x; i < per_row; i += blockDim.x) {
      const int64_t h = i / half, pair = i - h * half;
      rotate_pair(a, r, h, pair);
    }
    __syncthreads();  // the row's rotated values are visible to every thread of the block
    const float* row = a.x + r * a.row_stride;
    for (int32_t s = row_begin[r]; s < row_begin[r + 1]; ++s) {
      const RowStore st = stores[s];
      for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
        st.dst[c] = float_to_kv_bits(row[st.col + c], st.bf16 != 0);
      }
    }
  }
}

__global__ void swiglu_rows(const float* __restrict__ gate_up, int64_t n, int64_t ff,
                            float* __restrict__ out, __half* __restrict__ out16) {
  const int64_t total = n * ff;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / ff, j = i - r * ff;
    const float g = gate_up[r * 2 * ff + j];
    const float u = gate_up[r * 2 * ff + ff + j];
    const float v = g / (1.0f + expf(-g)) * u;
    out[i] = v;
    if (out16 != nullptr) out16[i] = __float2half_rn(v);
  }
}

__global__ void add_in_place(float* __restrict__ y, const float* __restrict__ x, int64_t count) {
  for (int64_t i = thread_index(); i < count; i += grid_stride()) y[i] = __fadd_rn(y[i], x[i]);
}

__global__ void add_bias_rows(float* __restrict__ y, const float* __restrict__ bias, int64_t n,
                              int64_t width, int64_t row_stride) {
  const int64_t total = n * width;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / width, j = i - r * width;
    y[r * row_stride + j] += bias[j];
  }
}

// The best of two (value, index) candidates of one row, index −1 meaning none: the larger
// value, the smaller index on equal values. A total order on non-NaN values (NaN never enters),
// so the reduction's result does not depend on its order.
struct Best {
  float value;
  int64_t index;
};
__device__ inline Best better(Best a, Best b) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

__global__ void argmax_rows(const float* __restrict__ x, int64_t width, int32_t* __restrict__ ids) {
  __shared__ Best warp_best[kThreads / kWarp];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * width;
  Best best{0.0f, -1};
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {  // increasing i: first max kept
    const float v = row[i];
    if (!isnan(v) && (best.index < 0 || v > best.value)) best = Best{v, i};
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    Best other;
    other.value = __shfl_xor_sync(0xffffffffu, best.value, offset);
    other.index = __shfl_xor_sync(0xffffffffu, best.index, offset);
    best = better(best, other);
  }
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int warp = static_cast<int>(threadIdx.x) / kWarp;
  if (lane == 0) warp_best[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    Best b = warp_best[0];
    for (int w = 1; w < kThreads / kWarp; ++w) b = better(b, warp_best[w]);
    // std::max_element starts from the first value: a NaN there is never replaced.
    const bool first_nan = width > 0 && isnan(row[0]);
    ids[blockIdx.x] = first_nan || b.index < 0 ? 0 : static_cast<int32_t>(b.index);
  }
}

}  // namespace

void launch_f32_to_kv(cudaStream_t stream, unsigned blocks, const float* src, int64_t src_stride,
                      int64_t n, int64_t width, uint16_t* dst, int64_t dst_stride, bool bf16) {
  f32_rows_to_kv<<<blocks, kThreads, 0, stream>>>(src, src_stride, n, width, dst, dst_stride, bf16);
  LS_CUDA_LAUNCHED();
}

void launch_store_queued(cudaStream_t stream, const QueuedStore* stores, int64_t count,
                         int64_t width) {
  store_queued<<<static_cast<unsigned>(count), kThreads, 0, stream>>>(stores, width);
  LS_CUDA_LAUNCHED();
}

void launch_gather_rows(cudaStream_t stream, unsigned blocks, const __half* table, int64_t cols,
                        const int32_t* ids, int64_t count, float* out) {
  gather_rows<<<blocks, kThreads, 0, stream>>>(table, cols, ids, count, out);
  LS_CUDA_LAUNCHED();
}

void launch_rms_norm(cudaStream_t stream, unsigned blocks, float* x, const float* residual,
                     const float* weight, int64_t n, int64_t dim, float eps, float* y,
                     __half* y16) {
  rms_norm_rows<<<blocks, kThreads, 0, stream>>>(x, residual, weight, n, dim, eps, y, y16);
  LS_CUDA_LAUNCHED();
}

void launch_rope(cudaStream_t stream, unsigned blocks, const RopeArgs& rope) {
  rope_rows<<<blocks, kThreads, 0, stream>>>(rope);
  LS_CUDA_LAUNCHED();
}

void launch_rope_then_store(cudaStream_t stream, unsigned blocks, const RopeArgs& rope,
                            const RowStore* stores, const int32_t* row_begin, int64_t width) {
  rope_rows_then_store<<<blocks, kThreads, 0, stream>>>(rope, stores, row_begin, width);
  LS_CUDA_LAUNCHED();
}

void launch_swiglu(cudaStream_t stream, unsigned blocks, const float* gate_up, int64_t n,
                   int64_t ff, float* out, __half* out16) {
  swiglu_rows<<<blocks, kThreads, 0, stream>>>(gate_up, n, ff, out, out16);
  LS_CUDA_LAUNCHED();
}

void launch_add(cudaStream_t stream, unsigned blocks, float* y, const float* x, int64_t count) {
  add_in_place<<<blocks, kThreads, 0, stream>>>(y, x, count);
  LS_CUDA_LAUNCHED();
}

void launch_add_bias(cudaStream_t stream, unsigned blocks, float* y, const float* bias, int64_t n,
                     int64_t width, int64_t row_stride) {
  add_bias_rows<<<blocks, kThreads, 0, stream>>>(y, bias, n, width, row_stride);
  LS_CUDA_LAUNCHED();
}

void launch_argmax_rows(cudaStream_t stream, const float* x, int64_t n, int64_t width,
                        int32_t* ids) {
  // Grid x holds up to 2³¹ − 1 blocks; a step's rows are far fewer.
  argmax_rows<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(x, width, ids);
  LS_CUDA_LAUNCHED();
}

}  // namespace lightserve::kernels::cuda
