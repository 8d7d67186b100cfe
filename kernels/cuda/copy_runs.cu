// Backend::copy_runs_f16 on the device: a prefill moves a layer's keys and values into hundreds of
// blocks at once; one launch instead of a copy call per block.
#include <vector>

#include "kernels/cuda/cuda_common.h"

namespace lightserve::kernels::cuda {
namespace {

struct RunDesc {
  const uint16_t* src;
  uint16_t* dst;
  int64_t first_word;  // of this run in the concatenation of all runs, in 16-byte words
  int64_t words;
};

// One thread per 16-byte word of the concatenated runs (every run is a whole number of words when
// width·2 is a multiple of 16, which the caller checks); a binary search finds the run.
__global__ void copy_runs_kernel(const RunDesc* runs, int32_t num_runs, int64_t total_words) {
  for (int64_t w = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; w < total_words;
       w += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int32_t lo = 0, hi = num_runs - 1;
    while (lo < hi) {
      const int32_t mid = (lo + hi + 1) / 2;
      if (runs[mid].first_word <= w) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const RunDesc& r = runs[lo];
    const int64_t i = w - r.first_word;
    reinterpret_cast<uint4*>(r.dst)[i] = reinterpret_cast<const uint4*>(r.src)[i];
  }
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

}  // namespace

void copy_runs_f16(CudaContext& ctx, DeviceScratch& descriptors,
                   std::span<const Backend::RowRun> runs, int64_t width) {
  const int64_t row_bytes = width * 2;
  bool vectorizable = row_bytes % 16 == 0;
  for (const Backend::RowRun& r : runs) {
    vectorizable = vectorizable && aligned16(r.src) && aligned16(r.dst);
  }
  if (!vectorizable) {  // odd widths or alignments: one copy per run
    for (const Backend::RowRun& r : runs) {
      if (r.rows > 0) {
        LS_CUDA_CHECK(cudaMemcpyAsync(r.dst, r.src, static_cast<size_t>(r.rows * row_bytes),
                                      cudaMemcpyDeviceToDevice, ctx.stream));
      }
    }
    return;
  }
  std::vector<RunDesc> host;
  host.reserve(runs.size());
  int64_t words = 0;
  for (const Backend::RowRun& r : runs) {
    if (r.rows <= 0) continue;
    const int64_t n = r.rows * row_bytes / 16;
    host.push_back(RunDesc{r.src, r.dst, words, n});
    words += n;
  }
  if (host.empty()) return;
  RunDesc* device = descriptors.get<RunDesc>(static_cast<int64_t>(host.size()));
  ctx.upload_small(device, host.data(), static_cast<int64_t>(host.size() * sizeof(RunDesc)));
  const int threads = 256;
  const int64_t blocks =
      std::min<int64_t>((words + threads - 1) / threads, static_cast<int64_t>(ctx.num_sms) * 16);
  copy_runs_kernel<<<static_cast<unsigned>(std::max<int64_t>(blocks, 1)), threads, 0, ctx.stream>>>(
      device, static_cast<int32_t>(host.size()), words);
  LS_CUDA_LAUNCHED();
}

}  // namespace lightserve::kernels::cuda
