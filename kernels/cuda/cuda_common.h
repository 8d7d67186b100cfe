// Shared by the CUDA backend's translation units (kernels/cuda/*.cu); not a public header.
// One CudaContext per backend: its device, one stream every op is issued on (so ops run in issue
// order, as the Backend contract says), and one cuBLAS handle bound to that stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace lightserve::kernels::cuda {

// A CUDA or cuBLAS failure inside an op: the backend cannot go on (an op has no error channel),
// so it throws; the daemon treats it like any other fatal engine error.
[[noreturn]] inline void fail(const char* what, const char* detail, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA backend: ") + what + " failed: " + detail + " (" +
                           file + ":" + std::to_string(line) + ")");
}

#define LS_CUDA_CHECK(expr)                                                                      \
  do {                                                                                           \
    cudaError_t ls_err_ = (expr);                                                                \
    if (ls_err_ != cudaSuccess) {                                                                \
      ::lightserve::kernels::cuda::fail(#expr, cudaGetErrorString(ls_err_), __FILE__, __LINE__); \
    }                                                                                            \
  } while (0)

#define LS_CUBLAS_CHECK(expr)                                                                      \
  do {                                                                                             \
    cublasStatus_t ls_st_ = (expr);                                                                \
    if (ls_st_ != CUBLAS_STATUS_SUCCESS) {                                                         \
      ::lightserve::kernels::cuda::fail(#expr, cublasGetStatusString(ls_st_), __FILE__, __LINE__); \
    }                                                                                              \
  } while (0)

// Checks the launch just issued (bad configuration etc.; asynchronous faults surface at the next
// synchronizing call).
#define LS_CUDA_LAUNCHED() LS_CUDA_CHECK(cudaGetLastError())

// Small host → device copies (ids, positions, descriptors) through pinned memory: a copy from
// pageable memory makes the host wait for the stream to drain, which would stall the issue of
// every later op of the step. Space is handed out as a ring; when it wraps, the host waits once
// for the stream, after which every earlier copy out of the ring has completed.
class PinnedRing {
 public:
  static constexpr int64_t kBytes = 8 << 20;
  PinnedRing() = default;
  ~PinnedRing() {
    if (base_ != nullptr) cudaFreeHost(base_);
  }
  PinnedRing(const PinnedRing&) = delete;
  PinnedRing& operator=(const PinnedRing&) = delete;

  // Copies `bytes` of host memory at src to device memory at dst, in stream order.
  void upload(cudaStream_t stream, void* dst, const void* src, int64_t bytes) {
    if (bytes <= 0) return;
    if (bytes > kBytes / 2) {  // rare and large: a plain (synchronizing) copy
      LS_CUDA_CHECK(
          cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, stream));
      LS_CUDA_CHECK(cudaStreamSynchronize(stream));
      return;
    }
    if (base_ == nullptr) {
      LS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&base_), kBytes, cudaHostAllocDefault));
    }
    const int64_t aligned = (bytes + 255) & ~int64_t{255};
    if (head_ + aligned > kBytes) {
      LS_CUDA_CHECK(cudaStreamSynchronize(stream));
      head_ = 0;
    }
    char* staged = base_ + head_;
    head_ += aligned;
    std::memcpy(staged, src, static_cast<size_t>(bytes));
    LS_CUDA_CHECK(
        cudaMemcpyAsync(dst, staged, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, stream));
  }

 private:
  char* base_ = nullptr;
  int64_t head_ = 0;
};

class StepRecorder;  // cuda_graphs.h

struct CudaContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  int num_sms = 0;
  PinnedRing staging;  // for small host → device copies of op arguments
  // Set while a decode step is recorded for a CUDA graph (cuda_graphs.h): launches are appended
  // to it instead of issued, and their host data is staged in it. Null otherwise.
  StepRecorder* recording = nullptr;
  // Scratch blocks replaced while a step was recorded: its launches still point into them, so
  // they are freed only after the step has been issued (StepRecorder), and the step is not
  // captured (its graph would keep pointers to freed memory).
  std::vector<void*> retired_scratch;

  void upload_small(void* dst, const void* src, int64_t bytes) {
    staging.upload(stream, dst, src, bytes);
  }
};

// Device scratch that grows on demand and is reused across calls. Growing frees the old block
// (cudaFree waits for the device, so work still reading it finishes first); with a context whose
// step is being recorded, the old block is retired there instead (launches recorded before the
// growth still use it).
class DeviceScratch {
 public:
  DeviceScratch() = default;
  explicit DeviceScratch(CudaContext& ctx) : ctx_(&ctx) {}
  ~DeviceScratch() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  template <typename T>
  T* get(int64_t count) {
    const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
    if (bytes > bytes_) {
      if (ptr_ != nullptr && ctx_ != nullptr && ctx_->recording != nullptr) {
        ctx_->retired_scratch.push_back(ptr_);
      } else if (ptr_ != nullptr) {
        LS_CUDA_CHECK(cudaFree(ptr_));
      }
      ptr_ = nullptr;
      bytes_ = 0;
      LS_CUDA_CHECK(cudaMalloc(&ptr_, static_cast<size_t>(bytes)));
      bytes_ = bytes;
    }
    return static_cast<T*>(ptr_);
  }

 private:
  CudaContext* ctx_ = nullptr;
  void* ptr_ = nullptr;
  int64_t bytes_ = 0;
};

// Backend::copy_runs_f16 on the device (copy_runs.cu): the run descriptors go up in one copy,
// one kernel moves every row.
void copy_runs_f16(CudaContext& ctx, DeviceScratch& descriptors,
                   std::span<const Backend::RowRun> runs, int64_t width);

// Attention and LightTransfer's lazy ratio on the device (cuda_attention.cu, flash_prefill.cu,
// lazy_ratio.cu), with the exact contract of Backend::attention and Backend::lazy_ratio
// (kernels/backend.h). Pointers in q,
// out, lse and the KvViews are device memory; `seqs` and the block tables its views point to
// are host memory, copied to the device per call.
class CudaAttention {
 public:
  explicit CudaAttention(CudaContext& ctx);
  ~CudaAttention();
  CudaAttention(const CudaAttention&) = delete;
  CudaAttention& operator=(const CudaAttention&) = delete;

  void attention(const float* q, std::span<const AttentionSeq> seqs, const AttentionShape& shape,
                 float* out);
  // attention() recorded into a decode step (cuda_graphs.h): every sequence one query on the
  // decode path, the split grid sized for the step's bucket of rows and of keys, descriptors and
  // page tables staged at fixed offsets. False, with nothing recorded, when the call is not such
  // a decode (the step must then go on eagerly).
  bool record_decode(const float* q, std::span<const AttentionSeq> seqs,
                     const AttentionShape& shape, float* out, StepRecorder& recorder);
  // Returns after the device has computed it (one float comes back to the host).
  // head_ratios: host memory or null.
  float lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n, int32_t w_last,
                   int32_t sink, int32_t window, const AttentionShape& shape, LazyScore score,
                   float* head_ratios);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lightserve::kernels::cuda
