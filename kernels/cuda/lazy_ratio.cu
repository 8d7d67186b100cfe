// LightTransfer's lazy ratio on the device (Backend::lazy_ratio, kernels/backend.h): per query
// head, the mean attention mass of the prompt's scored queries on the sinks and the recent window,
// combined by the LazyScore, with the exact definition of the CPU oracle
// (kernels/cpu/lazy_ratio_impl.inc).
#include <algorithm>
#include <vector>

#include "kernels/cuda/attention_common.cuh"

namespace lightserve::kernels::cuda {
namespace {

constexpr int kRatioSplit = 256;  // keys per lazy-ratio block

// Block (x = query index from first_query, y = KV head, z = split of kRatioSplit keys): the mass
// Σ exp(s − lse) of each of its G heads over its keys of [0, sink_end) ∪ [window_begin, n), keys
// ≤ the query only. Writes G floats, parts[((x · heads) + head) · splits + z].
template <int HD, int G>
__global__ void __launch_bounds__(kThreads)
    ratio_kernel(const float* __restrict__ q, const float* __restrict__ lse, SeqDesc kv,
                 const int32_t* __restrict__ tables, int64_t q_stride, int heads, float scale,
                 int32_t first_query, int32_t sink_end, int32_t window_begin,
                 float* __restrict__ parts) {
  using L = Lanes<HD>;
  __shared__ float sh_mass[kWarps][G];
  const int32_t pos = first_query + static_cast<int32_t>(blockIdx.x);
  const int kvh = blockIdx.y;
  const int32_t sink_keys = imin(sink_end, pos + 1);
  const KeySpan span{sink_keys, window_begin, sink_keys + imax(0, pos + 1 - window_begin)};
  const int32_t j0 = static_cast<int32_t>(blockIdx.z) * kRatioSplit;
  const int32_t j1 = imin(j0 + kRatioSplit, span.count);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kl = lane % L::kPerKey, ks = lane / L::kPerKey;
  const int64_t head_offset = static_cast<int64_t>(kvh) * HD;

  float mass[G];
#pragma unroll
  for (int g = 0; g < G; ++g) mass[g] = 0.0f;
  if (j0 < j1) {  // block-uniform
    float qr[G][16];
    load_query<HD, G>(q + static_cast<int64_t>(pos) * q_stride + head_offset * G, kl, kv.bf16 != 0,
                      qr);
    float row_lse[G];
#pragma unroll
    for (int g = 0; g < G; ++g) row_lse[g] = lse[static_cast<int64_t>(pos) * heads + kvh * G + g];
    const bool vec = kv.vec != 0;
    for (int32_t base = j0 + warp * L::kKeysPerWarp; base < j1; base += L::kKeysPerBlock) {
      const int32_t j = base + ks;
      float kf[16];
      if (j < j1) {
        load_key<HD>(kv.k + token_row(kv, tables, span_token(span, j)) + head_offset, kl, vec,
                     kv.bf16 != 0, kf);
      } else {
#pragma unroll
        for (int e = 0; e < 16; ++e) kf[e] = 0.0f;
      }
      float dot[G];
      key_dots<HD, G>(qr, kf, dot);
      if (j < j1 && kl == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) mass[g] += expf(dot[g] * scale - row_lse[g]);
      }
    }
  }
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float sum = warp_sum(mass[g]);
    if (lane == 0) sh_mass[warp][g] = sum;
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < G) {
    const int g = threadIdx.x;
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += sh_mass[w][g];
    const int64_t head = static_cast<int64_t>(kvh) * G + g;
    parts[(static_cast<int64_t>(blockIdx.x) * heads + head) * gridDim.z + blockIdx.z] = total;
  }
}

// result[1 + h] = clamp(mass of head h / num_q, 0, 1), the per-head ratios, and result[0] = the
// score: their minimum (min_score) or Σ mass / (num_q · heads), clamped. Sums in double, one
// block; `heads` doubles of dynamic shared memory.
__global__ void __launch_bounds__(256)
    ratio_final(const float* __restrict__ parts, int num_q, int heads, int splits, int min_score,
                float* __restrict__ result) {
  extern __shared__ double head_mass[];
  for (int h = threadIdx.x; h < heads; h += blockDim.x) {
    double sum = 0.0;
    for (int x = 0; x < num_q; ++x) {
      const float* p = parts + (static_cast<int64_t>(x) * heads + h) * splits;
      for (int z = 0; z < splits; ++z) sum += p[z];
    }
    head_mass[h] = sum;
    // Rounding of the log-sum-exp can push a full mass a few ulp past 1.
    result[1 + h] = static_cast<float>(fmin(1.0, fmax(0.0, sum / num_q)));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0, least = 1.0;
    for (int h = 0; h < heads; ++h) {
      total += head_mass[h];
      least = fmin(least, fmin(1.0, fmax(0.0, head_mass[h] / num_q)));
    }
    const double ratio = min_score ? least : total / (static_cast<double>(num_q) * heads);
    result[0] = static_cast<float>(fmin(1.0, fmax(0.0, ratio)));
  }
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
                        const AttentionShape& shape, LazyScore score, float* head_ratios) {
  const int group = check_shape(shape, "lazy_ratio");
  if (score == LazyScore::kHeadMinLast) w_last = std::min(w_last, 1);
  const int32_t first_query = std::max(0, n - std::max(w_last, 0));
  const int32_t num_q = n - first_query;
  if (num_q <= 0) {
    if (head_ratios != nullptr) std::fill(head_ratios, head_ratios + shape.heads, 1.0f);
    return 1.0f;
  }
  SeqDesc d = describe(kv, shape.kv_type, "lazy_ratio");
  // The kept keys [0, sink_end) ∪ [window_begin, n), as lazy_ratio_impl.inc's lazy_ratio clamps
  // them.
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
  const int64_t count = static_cast<int64_t>(num_q) * shape.heads * splits;
  float* parts = parts_scratch.get<float>(count + 1 + shape.heads);
  float* result = parts + count;  // [1 + heads]: the score, then the per-head ratios
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
  ratio_final<<<1, 256, static_cast<size_t>(shape.heads) * sizeof(double), ctx.stream>>>(
      parts, num_q, shape.heads, splits, score == LazyScore::kMean ? 0 : 1, result);
  LS_CUDA_LAUNCHED();
  std::vector<float> host(static_cast<size_t>(1 + shape.heads));
  LS_CUDA_CHECK(cudaMemcpyAsync(host.data(), result, host.size() * sizeof(float),
                                cudaMemcpyDeviceToHost, ctx.stream));
  LS_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  if (head_ratios != nullptr) std::copy(host.begin() + 1, host.end(), head_ratios);
  return host[0];
}

}  // namespace lightserve::kernels::cuda
