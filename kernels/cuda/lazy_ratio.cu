// LightTransfer's lazy ratio on the device (Backend::lazy_ratio, kernels/backend.h): the mean
// attention mass of the prompt's last w_last queries on the sinks and the recent window, with the
// exact definition of the CPU oracle (kernels/cpu/ops_impl.inc).
#include <algorithm>

#include "kernels/cuda/attention_common.cuh"

namespace lightserve::kernels::cuda {
namespace {

constexpr int kRatioSplit = 256;  // keys per lazy-ratio block

// Block (x = query index from first_query, y = KV head, z = split of kRatioSplit keys): the mass
// Σ exp(s − lse) of its G heads over its keys of [0, sink_end) ∪ [window_begin, n), keys ≤ the
// query only. Writes one float per block.
template <int HD, int G>
__global__ void __launch_bounds__(kThreads)
    ratio_kernel(const float* __restrict__ q, const float* __restrict__ lse, SeqDesc kv,
                 const int32_t* __restrict__ tables, int64_t q_stride, int heads, float scale,
                 int32_t first_query, int32_t sink_end, int32_t window_begin,
                 float* __restrict__ parts) {
  using L = Lanes<HD>;
  __shared__ float sh_mass[kWarps];
  const int32_t pos = first_query + static_cast<int32_t>(blockIdx.x);
  const int kvh = blockIdx.y;
  const int32_t sink_keys = imin(sink_end, pos + 1);
  const KeySpan span{sink_keys, window_begin, sink_keys + imax(0, pos + 1 - window_begin)};
  const int32_t j0 = static_cast<int32_t>(blockIdx.z) * kRatioSplit;
  const int32_t j1 = imin(j0 + kRatioSplit, span.count);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kl = lane % L::kPerKey, ks = lane / L::kPerKey;
  const int64_t head_offset = static_cast<int64_t>(kvh) * HD;

  float mass = 0.0f;
  if (j0 < j1) {  // block-uniform
    float qr[G][16];
    load_query<HD, G>(q + static_cast<int64_t>(pos) * q_stride + head_offset * G, kl, qr);
    float row_lse[G];
#pragma unroll
    for (int g = 0; g < G; ++g) row_lse[g] = lse[static_cast<int64_t>(pos) * heads + kvh * G + g];
    const bool vec = kv.vec != 0;
    for (int32_t base = j0 + warp * L::kKeysPerWarp; base < j1; base += L::kKeysPerBlock) {
      const int32_t j = base + ks;
      float kf[16];
      if (j < j1) {
        load_key<HD>(kv.k + token_row(kv, tables, span_token(span, j)) + head_offset, kl, vec, kf);
      } else {
#pragma unroll
        for (int e = 0; e < 16; ++e) kf[e] = 0.0f;
      }
      float dot[G];
      key_dots<HD, G>(qr, kf, dot);
      if (j < j1 && kl == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) mass += expf(dot[g] * scale - row_lse[g]);
      }
    }
  }
  mass = warp_sum(mass);
  if (lane == 0) sh_mass[warp] = mass;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += sh_mass[w];
    parts[(static_cast<int64_t>(blockIdx.x) * gridDim.y + blockIdx.y) * gridDim.z + blockIdx.z] =
        total;
  }
}

// result = clamp(Σ parts / denominator, 0, 1), summed in double by one block.
__global__ void __launch_bounds__(256) ratio_final(const float* __restrict__ parts, int64_t count,
                                                   double denominator, float* __restrict__ result) {
  __shared__ double sh[256];
  double sum = 0.0;
  for (int64_t x = threadIdx.x; x < count; x += 256) sum += parts[x];
  sh[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = 128; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) sh[threadIdx.x] += sh[threadIdx.x + stride];
    __syncthreads();
  }
  // Rounding of the log-sum-exp can push a full mass a few ulp past 1.
  if (threadIdx.x == 0) *result = static_cast<float>(fmin(1.0, fmax(0.0, sh[0] / denominator)));
}

struct RatioArgs {
  dim3 grid;
  cudaStream_t stream;
  const float* q;
  const float* lse;
  SeqDesc kv;
  const int32_t* tables;
  int64_t q_stride;
  int heads;
  float scale;
  int32_t first_query, sink_end, window_begin;
  float* parts;
};

template <int HD, int G>
struct RatioLaunch {
  static void run(const RatioArgs& a) {
    ratio_kernel<HD, G><<<a.grid, kThreads, 0, a.stream>>>(a.q, a.lse, a.kv, a.tables, a.q_stride,
                                                           a.heads, a.scale, a.first_query,
                                                           a.sink_end, a.window_begin, a.parts);
  }
};

}  // namespace

float device_lazy_ratio(CudaContext& ctx, DeviceScratch& table_scratch,
                        DeviceScratch& parts_scratch, const float* q, const float* lse,
                        const KvView& kv, int32_t n, int32_t w_last, int32_t sink, int32_t window,
                        const AttentionShape& shape) {
  const int group = check_shape(shape, "lazy_ratio");
  const int32_t first_query = std::max(0, n - std::max(w_last, 0));
  const int32_t num_q = n - first_query;
  if (num_q <= 0) return 1.0f;
  SeqDesc d = describe(kv, "lazy_ratio");
  // The kept keys [0, sink_end) ∪ [window_begin, n), as ops_impl.inc's lazy_ratio clamps them.
  const int32_t sink_end = std::min(std::max(sink, 0), n);
  const int32_t window_begin = std::max(sink_end, n - std::max(window, 0));
  const int32_t most_keys = sink_end + (n - window_begin);  // those of the last query
  const int32_t splits = std::max(1, (most_keys + kRatioSplit - 1) / kRatioSplit);

  const int32_t* tables = nullptr;
  if (d.kind == kKindPaged) {
    const int64_t entries = (n - 1) / d.block_size + 1;
    int32_t* device = table_scratch.get<int32_t>(entries);
    ctx.upload_small(device, kv.block_table, entries * static_cast<int64_t>(sizeof(int32_t)));
    tables = device;
  }
  const int64_t count = static_cast<int64_t>(num_q) * shape.kv_heads * splits;
  float* parts = parts_scratch.get<float>(count + 1);
  float* result = parts + count;
  RatioArgs a{dim3(static_cast<unsigned>(num_q), static_cast<unsigned>(shape.kv_heads),
                   static_cast<unsigned>(splits)),
              ctx.stream,
              q,
              lse,
              d,
              tables,
              shape.q_stride,
              shape.heads,
              shape.scale,
              first_query,
              sink_end,
              window_begin,
              parts};
  dispatch<RatioLaunch>(shape.head_dim, group, a);
  LS_CUDA_LAUNCHED();
  ratio_final<<<1, 256, 0, ctx.stream>>>(parts, count, static_cast<double>(num_q) * shape.heads,
                                         result);
  LS_CUDA_LAUNCHED();
  float ratio = 0.0f;
  LS_CUDA_CHECK(cudaMemcpyAsync(&ratio, result, sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
  LS_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return ratio;
}

}  // namespace lightserve::kernels::cuda
