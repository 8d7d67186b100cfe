// The CUDA backend's owned device resources (split from cuda_backend.cu): a resident weight, the
// device allocation that reports exhaustion as std::bad_alloc, and the owned context (device,
// stream, cuBLAS handle). Not a public header; included by cuda_backend.cu only.
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_common.h"

namespace lightserve::kernels::cuda {

// A weight as a device f16 matrix [rows × cols], row-major, dequantized from the file's encoding
// on the host at load time (Q4/Q8 matmuls thus run as f16 GEMMs; type() still names the file's
// encoding, as the CPU backend's does).
class CudaWeight final : public Weight {
 public:
  CudaWeight(DType type, int64_t rows, int64_t cols, __half* data)
      : type_(type), rows_(rows), cols_(cols), data_(data) {}
  ~CudaWeight() override {
    // A destructor must not throw; a failure here is a fault of earlier work, already reported.
    if (data_ != nullptr) static_cast<void>(cudaFree(data_));
  }
  CudaWeight(const CudaWeight&) = delete;
  CudaWeight& operator=(const CudaWeight&) = delete;

  DType type() const override { return type_; }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  int64_t resident_bytes() const override { return rows_ * cols_ * 2; }
  const __half* data() const { return data_; }

 private:
  DType type_;
  int64_t rows_, cols_;
  __half* data_;
};

// cudaMalloc that reports exhaustion as std::bad_alloc (the Backend contract) and anything else
// as a CUDA failure.
inline void* device_malloc(int64_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, static_cast<size_t>(bytes));
  if (err == cudaErrorMemoryAllocation) {
    static_cast<void>(cudaGetLastError());  // not sticky: clear it so later checks do not see it
    throw std::bad_alloc();
  }
  LS_CUDA_CHECK(err);
  return p;
}

inline int checked_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) {
    throw std::invalid_argument(std::string("CUDA backend: ") + what + " " + std::to_string(v) +
                                " does not fit cuBLAS's int");
  }
  return static_cast<int>(v);
}

// The device, its stream and cuBLAS handle, owned. A member of CudaBackend declared before
// everything that issues work on the stream, so it is destroyed after them.
struct OwnedContext {
  CudaContext ctx;

  explicit OwnedContext(int device) {
    ctx.device = device;
    LS_CUDA_CHECK(cudaSetDevice(device));
    LS_CUDA_CHECK(cudaDeviceGetAttribute(&ctx.num_sms, cudaDevAttrMultiProcessorCount, device));
    LS_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
    try {
      LS_CUBLAS_CHECK(cublasCreate(&ctx.cublas));
      LS_CUBLAS_CHECK(cublasSetStream(ctx.cublas, ctx.stream));
      // Default math lets f16 GEMMs use tensor cores; accumulation stays f32 (CUBLAS_COMPUTE_32F).
      LS_CUBLAS_CHECK(cublasSetMathMode(ctx.cublas, CUBLAS_DEFAULT_MATH));
    } catch (...) {
      release();
      throw;
    }
  }
  ~OwnedContext() { release(); }
  OwnedContext(const OwnedContext&) = delete;
  OwnedContext& operator=(const OwnedContext&) = delete;

  void release() noexcept {
    if (ctx.cublas != nullptr) static_cast<void>(cublasDestroy(ctx.cublas));
    if (ctx.stream != nullptr) static_cast<void>(cudaStreamDestroy(ctx.stream));
    ctx.cublas = nullptr;
    ctx.stream = nullptr;
  }
};

}  // namespace lightserve::kernels::cuda
