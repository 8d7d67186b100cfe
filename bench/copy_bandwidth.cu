// The GPU's measured memory bandwidth, the denominator of the decode roofline
// (scripts/gpu_roofline.py): a device-to-device cudaMemcpy (bytes read + written per second)
// and a read-only kernel (bytes read per second), each the best of `iters` timed runs after
// warm-ups, on buffers far larger than the L2.
//   copy_bandwidth [MiB per buffer, default 2048] [--json FILE]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

#define CHECK(call)                                                                     \
  do {                                                                                  \
    const cudaError_t err = (call);                                                     \
    if (err != cudaSuccess) {                                                           \
      std::fprintf(stderr, "copy_bandwidth: %s: %s\n", #call, cudaGetErrorString(err)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

// Every thread sums its float4s (grid-stride); one atomic per block keeps the loads alive.
__global__ void read_all(const float4* __restrict__ src, size_t count, float* sink) {
  float acc = 0.0f;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float4 v = src[i];
    acc += v.x + v.y + v.z + v.w;
  }
  __shared__ float block_sum;
  if (threadIdx.x == 0) block_sum = 0.0f;
  __syncthreads();
  atomicAdd(&block_sum, acc);
  __syncthreads();
  if (threadIdx.x == 0 && block_sum == 12345.678f) atomicAdd(sink, block_sum);
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 2048;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else {
      mib = std::strtoull(argv[i], nullptr, 10);
    }
  }
  const size_t bytes = mib << 20;
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  void *a = nullptr, *b = nullptr;
  float* sink = nullptr;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMalloc(&sink, sizeof(float)));
  CHECK(cudaMemset(a, 0, bytes));
  CHECK(cudaMemset(b, 0, bytes));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  const int warmups = 3, iters = 10;
  auto best_ms = [&](auto&& op) {
    for (int i = 0; i < warmups; ++i) op();
    float best = 1e30f;
    for (int i = 0; i < iters; ++i) {
      CHECK(cudaEventRecord(start));
      op();
      CHECK(cudaEventRecord(stop));
      CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      CHECK(cudaEventElapsedTime(&ms, start, stop));
      best = std::min(best, ms);
    }
    return best;
  };
  const float copy_ms =
      best_ms([&] { CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  const int blocks = prop.multiProcessorCount * 8;
  const float read_ms = best_ms([&] {
    read_all<<<blocks, 512>>>(static_cast<const float4*>(a), bytes / sizeof(float4), sink);
    CHECK(cudaGetLastError());
  });
  const double copy_gbs = 2.0 * static_cast<double>(bytes) / (copy_ms * 1e-3) / 1e9;
  const double read_gbs = static_cast<double>(bytes) / (read_ms * 1e-3) / 1e9;
  std::printf("device: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount,
              static_cast<double>(prop.totalGlobalMem) / (1ull << 30));
  std::printf("copy %zu MiB device to device: %.3f ms, %.0f GB/s (read + written)\n", mib, copy_ms,
              copy_gbs);
  std::printf("read %zu MiB: %.3f ms, %.0f GB/s\n", mib, read_ms, read_gbs);
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "copy_bandwidth: cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f,
                 "{\"device\": \"%s\", \"buffer_bytes\": %zu, \"copy_gb_per_s\": %.1f, "
                 "\"read_gb_per_s\": %.1f}\n",
                 prop.name, bytes, copy_gbs, read_gbs);
    std::fclose(f);
  }
  return 0;
}
