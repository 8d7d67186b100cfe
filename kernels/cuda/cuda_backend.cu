// The CUDA backend: weights resident as f16 and multiplied with cuBLAS (f32 accumulation),
// element-wise ops as our own kernels, attention in CudaAttention (cuda_attention.cu). Every op
// is issued on the context's one stream, so ops run in issue order and return before the device
// has finished; download(), lazy_ratio() and synchronize() wait.
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/kv_type.cuh"

namespace lightserve::kernels {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

// Index of this thread in a 1-D grid-stride loop, and the loop's stride (64-bit: n · width can
// pass 2³¹).
__device__ inline int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// dst[r][c] = src[r][c] as f16 (or bf16), round to nearest even (as the CPU), for r < n,
// c < width: KV stores, and matmul inputs (f16).
__global__ void f32_rows_to_kv(const float* __restrict__ src, int64_t src_stride, int64_t n,
                               int64_t width, uint16_t* __restrict__ dst, int64_t dst_stride,
                               bool bf16) {
  const int64_t total = n * width;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / width, c = i - r * width;
    dst[r * dst_stride + c] = float_to_kv_bits(src[r * src_stride + c], bf16);
  }
}

// The queued store_kv calls (CudaBackend::flush_stores): one block per call.
struct QueuedStore {
  const float* src;
  int64_t src_stride;
  uint16_t* dst;
  int64_t dst_stride;
  int64_t rows;
  int32_t bf16;  // the cache type is bf16 (else f16)
};

__global__ void store_queued(const QueuedStore* __restrict__ stores, int64_t width) {
  const QueuedStore s = stores[blockIdx.x];
  for (int64_t i = threadIdx.x; i < s.rows * width; i += blockDim.x) {
    const int64_t r = i / width, c = i - r * width;
    s.dst[r * s.dst_stride + c] = float_to_kv_bits(s.src[r * s.src_stride + c], s.bf16 != 0);
  }
}

// out[i][c] = table[ids[i]][c] as f32.
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

// One block per row (grid-stride over rows). As the CPU: squares in f32 summed in f64, then
// y = (x · scale) · weight. x and y may alias: each thread rewrites only the values it read.
__global__ void rms_norm_rows(const float* x, const float* __restrict__ weight, int64_t n,
                              int64_t dim, float eps, float* y) {
  __shared__ double warp_sums[kThreads / kWarp];
  __shared__ float row_scale;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int warp = static_cast<int>(threadIdx.x) / kWarp;
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double sum = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      sum += static_cast<double>(__fmul_rn(xr[i], xr[i]));
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
      yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), weight[i]);
    }
    __syncthreads();  // warp_sums and row_scale are rewritten for the next row
  }
}

// Rotates pair i of every head of row r by positions[r] · theta_scale^i / freq_factors[i]: values
// (2i, 2i+1), or (i, i + head_dim/2) when neox. θ is built as the CPU's RopeTable builds it (the
// position times theta_scale, i times, in f32, then divided by the factor), so the angles are
// bit-identical; only cosf/sinf may differ from the host's by an ulp.
__global__ void rope_rows(float* x, const int32_t* __restrict__ positions, int64_t n, int64_t heads,
                          int64_t head_dim, int64_t row_stride, float theta_scale, bool neox,
                          const float* __restrict__ freq_factors) {
  const int64_t half = head_dim / 2;
  const int64_t per_row = heads * half;
  const int64_t total = n * per_row;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / per_row, rest = i - r * per_row;
    const int64_t h = rest / half, pair = rest - h * half;
    float theta = static_cast<float>(positions[r]);
    for (int64_t k = 0; k < pair; ++k) theta *= theta_scale;
    if (freq_factors != nullptr) theta = __fdiv_rn(theta, freq_factors[pair]);
    const float c = cosf(theta), s = sinf(theta);
    float* head = x + r * row_stride + h * head_dim;
    float* v0 = neox ? head + pair : head + 2 * pair;
    float* v1 = neox ? head + pair + half : head + 2 * pair + 1;
    const float x0 = *v0, x1 = *v1;
    *v0 = x0 * c - x1 * s;
    *v1 = x0 * s + x1 * c;
  }
}

// out[r][j] = silu(gate_up[r][j]) · gate_up[r][ff + j].
__global__ void swiglu_rows(const float* __restrict__ gate_up, int64_t n, int64_t ff,
                            float* __restrict__ out) {
  const int64_t total = n * ff;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / ff, j = i - r * ff;
    const float g = gate_up[r * 2 * ff + j];
    const float u = gate_up[r * 2 * ff + ff + j];
    out[i] = g / (1.0f + expf(-g)) * u;
  }
}

__global__ void add_in_place(float* __restrict__ y, const float* __restrict__ x, int64_t count) {
  for (int64_t i = thread_index(); i < count; i += grid_stride()) y[i] += x[i];
}

// y[r·row_stride + j] += bias[j].
__global__ void add_bias_rows(float* __restrict__ y, const float* __restrict__ bias, int64_t n,
                              int64_t width, int64_t row_stride) {
  const int64_t total = n * width;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const int64_t r = i / width, j = i - r * width;
    y[r * row_stride + j] += bias[j];
  }
}

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
void* device_malloc(int64_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, static_cast<size_t>(bytes));
  if (err == cudaErrorMemoryAllocation) {
    static_cast<void>(cudaGetLastError());  // not sticky: clear it so later checks do not see it
    throw std::bad_alloc();
  }
  LS_CUDA_CHECK(err);
  return p;
}

int checked_int(int64_t v, const char* what) {
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

// LIGHTSERVE_CUDA_PROFILE set: the GPU time of every op, from CUDA events around it, and the
// time the GPU sat idle between consecutive ops waiting for the host to issue the next (the
// signature of a launch-bound step), printed to stderr when the backend goes. Off: one branch
// per op.
class OpProfiler {
 public:
  explicit OpProfiler(cudaStream_t stream) : stream_(stream) {
    const char* env = std::getenv("LIGHTSERVE_CUDA_PROFILE");
    enabled_ = env != nullptr && *env != '\0';
  }
  ~OpProfiler() {
    if (!enabled_) return;
    collect();
    std::fprintf(stderr, "CUDA op profile (GPU ms from events; idle = GPU waiting between ops)\n");
    double busy = 0;
    for (const auto& [name, t] : totals_) busy += t.ms;
    for (const auto& [name, t] : totals_) {
      std::fprintf(stderr, "  %-20s %9lld calls %10.1f ms %8.1f us/call %5.1f%%\n", name.c_str(),
                   static_cast<long long>(t.calls), t.ms,
                   1e3 * t.ms / std::max<int64_t>(t.calls, 1), 100.0 * t.ms / std::max(busy, 1e-9));
    }
    std::fprintf(stderr, "  busy %.1f ms, idle between ops %.1f ms\n", busy, idle_ms_);
    for (cudaEvent_t e : pool_) static_cast<void>(cudaEventDestroy(e));
  }

  bool enabled() const { return enabled_; }
  // Marks the start and the end of one op's work on the stream.
  void begin(const char* name) {
    open_ = Record{name, event(), nullptr};
    LS_CUDA_CHECK(cudaEventRecord(open_.start, stream_));
  }
  // From a destructor, also while an op's error unwinds: a failure here only loses the record.
  void end() noexcept {
    if (pool_.empty() && cudaEventCreate(&open_.end) != cudaSuccess) return;
    if (open_.end == nullptr) {
      open_.end = pool_.back();
      pool_.pop_back();
    }
    if (cudaEventRecord(open_.end, stream_) == cudaSuccess) records_.push_back(open_);
  }
  // After the stream has been synchronized: every recorded event is complete.
  void collect() {
    cudaEvent_t previous_end = nullptr;
    for (const Record& r : records_) {
      float ms = 0;
      LS_CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.end));
      Total& t = totals_[r.name];
      ++t.calls;
      t.ms += ms;
      if (previous_end != nullptr) {
        LS_CUDA_CHECK(cudaEventElapsedTime(&ms, previous_end, r.start));
        idle_ms_ += ms;
      }
      previous_end = r.end;
      pool_.push_back(r.start);
      pool_.push_back(r.end);
    }
    records_.clear();
  }

 private:
  struct Record {
    const char* name;
    cudaEvent_t start, end;
  };
  struct Total {
    int64_t calls = 0;
    double ms = 0;
  };
  cudaEvent_t event() {
    if (pool_.empty()) {
      cudaEvent_t e;
      LS_CUDA_CHECK(cudaEventCreate(&e));
      return e;
    }
    cudaEvent_t e = pool_.back();
    pool_.pop_back();
    return e;
  }

  cudaStream_t stream_;
  bool enabled_ = false;
  Record open_{};
  std::vector<Record> records_;
  std::vector<cudaEvent_t> pool_;
  std::map<std::string, Total> totals_;
  double idle_ms_ = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : owned_(device) {
    cudaDeviceProp props{};
    LS_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    description_ = "cuda (" + std::string(props.name) + ", sm_" + std::to_string(props.major) +
                   std::to_string(props.minor) + ", " + std::to_string(ctx_.num_sms) + " SMs)";
  }

  ~CudaBackend() override {
    // Work still queued may read scratch that the members' destructors free; errors cannot be
    // reported from here.
    static_cast<void>(cudaStreamSynchronize(ctx_.stream));
  }

  std::string description() const override { return description_; }

  void* allocate(int64_t bytes) override {
    bind();
    return device_malloc(bytes);
  }

  void deallocate(void* p) override {
    // A queued store may write into p: issue the queue first (errors surface at the next call).
    if (!queued_stores_.empty()) {
      try {
        flush_stores();
      } catch (const std::exception&) {
      }
    }
    // Called from Buffer's destructor, so it must not throw; cudaFree fails only for a bad
    // pointer or a fault of earlier work, which the next checked call reports.
    static_cast<void>(cudaFree(p));
  }

  // Through the context's pinned ring (large copies synchronize): the caller may reuse `src` as
  // soon as this returns, and small uploads do not stall the stream.
  void upload(void* dst, const void* src, int64_t bytes) override {
    if (bytes <= 0) return;
    bind();
    const Profiled profiled(profiler_, "upload");
    ctx_.upload_small(dst, src, bytes);
  }

  void download(void* dst, const void* src, int64_t bytes) override {
    if (bytes <= 0) return;
    bind();
    const Profiled profiled(profiler_, "download");
    LS_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, ctx_.stream));
    LS_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    if (profiler_.enabled()) profiler_.collect();
  }

  void copy(void* dst, const void* src, int64_t bytes) override {
    if (bytes <= 0) return;
    bind();
    const Profiled profiled(profiler_, "copy");
    LS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                  ctx_.stream));
  }

  void synchronize() override {
    bind();
    LS_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    if (profiler_.enabled()) profiler_.collect();
  }

  std::unique_ptr<Weight> make_weight(std::span<const WeightView> parts) override {
    // Refuse what the CPU backend refuses: parts of different widths, and types or widths it
    // cannot decode. Parts of different types (a K-quant mix's Q, K, V) are each dequantized
    // from their own type.
    if (parts.empty()) return nullptr;
    const DType type = parts[0].type;
    const int64_t cols = parts[0].cols;
    if (cols <= 0) return nullptr;
    int64_t rows = 0;
    for (const WeightView& p : parts) {
      if (p.cols != cols || p.rows < 0 || p.data == nullptr) return nullptr;
      if (!dtype_traits(static_cast<uint32_t>(p.type)) || !row_bytes(p.type, cols)) return nullptr;
      rows += p.rows;
    }
    if (rows == 0) return std::make_unique<CudaWeight>(type, 0, cols, nullptr);

    std::vector<uint16_t> host(static_cast<size_t>(rows * cols));
    std::vector<float> row(static_cast<size_t>(cols));
    int64_t r = 0;
    for (const WeightView& p : parts) {
      const auto* src = static_cast<const uint8_t*>(p.data);
      const int64_t src_row_bytes = *row_bytes(p.type, cols);
      for (int64_t i = 0; i < p.rows; ++i, ++r) {
        dequantize_row(p.type, src + i * src_row_bytes, row.data(), cols);
        uint16_t* dst = host.data() + r * cols;
        for (int64_t c = 0; c < cols; ++c) dst[c] = fp32_to_fp16(row[static_cast<size_t>(c)]);
      }
    }
    bind();
    auto* data = static_cast<__half*>(device_malloc(rows * cols * 2));
    auto weight = std::make_unique<CudaWeight>(type, rows, cols, data);
    LS_CUDA_CHECK(
        cudaMemcpyAsync(data, host.data(), host.size() * 2, cudaMemcpyHostToDevice, ctx_.stream));
    // Weights load once: waiting costs nothing and frees `host` without relying on staging.
    LS_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    return weight;
  }

  void matmul(const Weight& w, const float* x, int64_t n, float* y) override {
    const auto& cw = static_cast<const CudaWeight&>(w);
    if (n <= 0 || cw.rows() == 0) return;
    bind();
    const Profiled profiled(profiler_, "matmul");
    const int64_t cols = cw.cols();
    __half* x16 = x_f16_.get<__half>(n * cols);
    f32_rows_to_kv<<<grid_for(n * cols), kThreads, 0, ctx_.stream>>>(
        x, cols, n, cols, reinterpret_cast<uint16_t*>(x16), cols, /*bf16=*/false);
    LS_CUDA_LAUNCHED();
    // cuBLAS is column-major: our row-major Y [n × rows] is its Yᵀ [rows × n], and
    // Yᵀ = Wᵀ · Xᵀ with W [rows × cols] read as a cols × rows matrix (op T, lda = cols).
    const float alpha = 1.0f, beta = 0.0f;
    const int m_rows = checked_int(cw.rows(), "weight rows");
    const int n_tokens = checked_int(n, "matmul tokens");
    const int k_cols = checked_int(cols, "weight cols");
    LS_CUBLAS_CHECK(cublasGemmEx(ctx_.cublas, CUBLAS_OP_T, CUBLAS_OP_N, m_rows, n_tokens, k_cols,
                                 &alpha, cw.data(), CUDA_R_16F, k_cols, x16, CUDA_R_16F, k_cols,
                                 &beta, y, CUDA_R_32F, m_rows, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  }

  void embed(const Weight& table, std::span<const int32_t> ids, float* out) override {
    const auto& cw = static_cast<const CudaWeight&>(table);
    const auto count = static_cast<int64_t>(ids.size());
    if (count == 0 || cw.cols() == 0) return;
    bind();
    const Profiled profiled(profiler_, "embed");
    const int32_t* device_ids = upload_span(ids, ids_);
    gather_rows<<<grid_for(count * cw.cols()), kThreads, 0, ctx_.stream>>>(cw.data(), cw.cols(),
                                                                           device_ids, count, out);
    LS_CUDA_LAUNCHED();
  }

  void rms_norm(const float* x, const float* weight, int64_t n, int64_t dim, float eps,
                float* y) override {
    if (n <= 0 || dim <= 0) return;
    bind();
    const Profiled profiled(profiler_, "rms_norm");
    const auto blocks = static_cast<unsigned>(std::min<int64_t>(n, int64_t{ctx_.num_sms} * 32));
    rms_norm_rows<<<blocks, kThreads, 0, ctx_.stream>>>(x, weight, n, dim, eps, y);
    LS_CUDA_LAUNCHED();
  }

  void rope(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
            int64_t row_stride, const RopeParams& params) override {
    const auto n = static_cast<int64_t>(positions.size());
    const int64_t pairs = n * heads * (head_dim / 2);
    if (pairs <= 0) return;
    bind();
    const Profiled profiled(profiler_, "rope");
    // Exactly the CPU's RopeTable::ensure step (kernels/cpu/cpu_backend.cpp), in f32.
    const float theta_scale = std::pow(params.freq_base, -2.0f / static_cast<float>(head_dim));
    const int32_t* device_positions = upload_span(positions, positions_);
    rope_rows<<<grid_for(pairs), kThreads, 0, ctx_.stream>>>(x, device_positions, n, heads,
                                                             head_dim, row_stride, theta_scale,
                                                             params.neox, params.freq_factors);
    LS_CUDA_LAUNCHED();
  }

  void add_bias(float* y, const float* bias, int64_t n, int64_t width,
                int64_t row_stride) override {
    if (n <= 0 || width <= 0) return;
    bind();
    const Profiled profiled(profiler_, "add_bias");
    add_bias_rows<<<grid_for(n * width), kThreads, 0, ctx_.stream>>>(y, bias, n, width, row_stride);
    LS_CUDA_LAUNCHED();
  }

  void swiglu(const float* gate_up, int64_t n, int64_t ff, float* out) override {
    if (n <= 0 || ff <= 0) return;
    bind();
    const Profiled profiled(profiler_, "swiglu");
    swiglu_rows<<<grid_for(n * ff), kThreads, 0, ctx_.stream>>>(gate_up, n, ff, out);
    LS_CUDA_LAUNCHED();
  }

  void add(float* y, const float* x, int64_t count) override {
    if (count <= 0) return;
    bind();
    const Profiled profiled(profiler_, "add");
    add_in_place<<<grid_for(count), kThreads, 0, ctx_.stream>>>(y, x, count);
    LS_CUDA_LAUNCHED();
  }

  bool memory_info(int64_t* free_bytes, int64_t* total_bytes) override {
    bind();
    LS_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    size_t free_now = 0, total = 0;
    LS_CUDA_CHECK(cudaMemGetInfo(&free_now, &total));
    *free_bytes = static_cast<int64_t>(free_now);
    *total_bytes = static_cast<int64_t>(total);
    return true;
  }

  void store_kv(const float* src, int64_t src_stride, int64_t n, int64_t width, uint16_t* dst,
                int64_t dst_stride, DType type) override {
    if (n <= 0 || width <= 0) return;
    if (!is_kv_type(type))
      throw std::invalid_argument("CUDA store_kv: the type must be f16 or bf16");
    const bool bf16 = type == DType::kBF16;
    if (n <= kQueuedStoreRows) {
      // A decode stores one K and one V row per sequence and layer: queued, and issued as one
      // launch by the next op (every other op flushes the queue first, in bind()).
      LS_CUDA_CHECK(cudaSetDevice(ctx_.device));
      if (!queued_stores_.empty() && width != queued_width_) flush_stores();
      queued_width_ = width;
      queued_stores_.push_back(QueuedStore{src, src_stride, dst, dst_stride, n, bf16 ? 1 : 0});
      return;
    }
    bind();
    const Profiled profiled(profiler_, "store_kv");
    f32_rows_to_kv<<<grid_for(n * width), kThreads, 0, ctx_.stream>>>(src, src_stride, n, width,
                                                                      dst, dst_stride, bf16);
    LS_CUDA_LAUNCHED();
  }

  void attention(const float* q, std::span<const AttentionSeq> seqs, const AttentionShape& shape,
                 float* out) override {
    bind();
    const Profiled profiled(profiler_, "attention");
    attention_.attention(q, seqs, shape, out);
  }

  float lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n, int32_t w_last,
                   int32_t sink, int32_t window, const AttentionShape& shape, LazyScore score,
                   float* head_ratios) override {
    bind();
    const Profiled profiled(profiler_, "lazy_ratio");
    return attention_.lazy_ratio(q, lse, kv, n, w_last, sink, window, shape, score, head_ratios);
  }

  void copy_rows_f16(const uint16_t* src, int64_t src_stride, int64_t count, int64_t width,
                     uint16_t* dst, int64_t dst_stride) override {
    if (count <= 0 || width <= 0) return;
    bind();
    const Profiled profiled(profiler_, "copy_rows_f16");
    const auto row_bytes = static_cast<size_t>(width) * 2;
    if (count == 1) {  // strides are meaningless for one row (cudaMemcpy2D would check them)
      LS_CUDA_CHECK(cudaMemcpyAsync(dst, src, row_bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
      return;
    }
    LS_CUDA_CHECK(cudaMemcpy2DAsync(
        dst, static_cast<size_t>(dst_stride) * 2, src, static_cast<size_t>(src_stride) * 2,
        row_bytes, static_cast<size_t>(count), cudaMemcpyDeviceToDevice, ctx_.stream));
  }

  void copy_runs_f16(std::span<const RowRun> runs, int64_t width) override {
    if (runs.empty() || width <= 0) return;
    bind();
    const Profiled profiled(profiler_, "copy_runs_f16");
    cuda::copy_runs_f16(ctx_, run_descriptors_, runs, width);
  }

 private:
  // Calls may come from a thread other than the one that created the backend (the engine
  // thread); the CUDA runtime's current device is per thread.
  // Also issues the queued stores, so that every op sees them done in issue order.
  void bind() {
    LS_CUDA_CHECK(cudaSetDevice(ctx_.device));
    if (!queued_stores_.empty()) flush_stores();
  }

  void flush_stores() {
    const Profiled profiled(profiler_, "store_kv (queued)");
    const auto count = static_cast<int64_t>(queued_stores_.size());
    QueuedStore* device = store_descriptors_.get<QueuedStore>(count);
    ctx_.upload_small(device, queued_stores_.data(),
                      count * static_cast<int64_t>(sizeof(QueuedStore)));
    queued_stores_.clear();
    store_queued<<<static_cast<unsigned>(count), kThreads, 0, ctx_.stream>>>(device, queued_width_);
    LS_CUDA_LAUNCHED();
  }

  // Blocks for a grid-stride loop over `count` items: enough to fill the device, no more than the
  // items need.
  unsigned grid_for(int64_t count) const {
    const int64_t needed = (count + kThreads - 1) / kThreads;
    return static_cast<unsigned>(
        std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{ctx_.num_sms} * 16)));
  }

  // A host span's copy in device scratch, through the pinned ring (the span may go when this
  // returns); the scratch is reused by the next call, after this op on the stream.
  const int32_t* upload_span(std::span<const int32_t> values, DeviceScratch& scratch) {
    int32_t* device = scratch.get<int32_t>(static_cast<int64_t>(values.size()));
    ctx_.upload_small(device, values.data(), static_cast<int64_t>(values.size_bytes()));
    return device;
  }

  // One op's profiling scope (begin at construction, end at destruction), when enabled.
  class Profiled {
   public:
    Profiled(OpProfiler& p, const char* name) : p_(p.enabled() ? &p : nullptr) {
      if (p_ != nullptr) p_->begin(name);
    }
    ~Profiled() {
      if (p_ != nullptr) p_->end();
    }
    Profiled(const Profiled&) = delete;
    Profiled& operator=(const Profiled&) = delete;

   private:
    OpProfiler* p_;
  };

  OwnedContext owned_;  // first: outlives every member below that issues work on its stream
  CudaContext& ctx_ = owned_.ctx;
  OpProfiler profiler_{ctx_.stream};
  CudaAttention attention_{ctx_};
  DeviceScratch x_f16_;            // matmul's activations in f16
  DeviceScratch ids_;              // embed's token ids
  DeviceScratch positions_;        // rope's positions
  DeviceScratch run_descriptors_;  // copy_runs_f16's descriptors
  static constexpr int64_t kQueuedStoreRows = 4;
  std::vector<QueuedStore> queued_stores_;  // store_kv calls not yet issued (all queued_width_)
  int64_t queued_width_ = 0;
  DeviceScratch store_descriptors_;
  std::string description_;
};

}  // namespace
}  // namespace cuda

std::unique_ptr<Backend> make_cuda_backend(int device, std::string* error) {
  auto refuse = [&](const std::string& why) -> std::unique_ptr<Backend> {
    static_cast<void>(cudaGetLastError());  // a failed query must not leak into later checks
    if (error != nullptr) *error = why;
    return nullptr;
  };
  int count = 0;
  if (const cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    return refuse(std::string("no CUDA device usable: ") + cudaGetErrorString(err));
  }
  if (count == 0) return refuse("no CUDA device is visible");
  if (device < 0 || device >= count) {
    return refuse("CUDA device " + std::to_string(device) + " does not exist (" +
                  std::to_string(count) + " visible)");
  }
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    return refuse("cannot query CUDA device " + std::to_string(device));
  }
  if (major < 8) {
    return refuse("CUDA device " + std::to_string(device) + " has compute capability " +
                  std::to_string(major) + "." + std::to_string(minor) +
                  "; the CUDA backend needs 8.0 or newer");
  }
  try {
    return std::make_unique<cuda::CudaBackend>(device);
  } catch (const std::exception& e) {
    return refuse(e.what());
  }
}

bool cuda_compiled() {
  return true;
}

}  // namespace lightserve::kernels
