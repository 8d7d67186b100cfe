// The CUDA backend: weights resident as f16 and multiplied with cuBLAS (f32 accumulation),
// element-wise ops as our own kernels (elementwise.cu), attention in CudaAttention
// (cuda_attention.cu). Every op is issued on the context's one stream, so ops run in issue order
// and return before the device has finished; download(), lazy_ratio(), argmax_rows() and
// synchronize() wait.
//
// Launch fusion (on unless LIGHTSERVE_CUDA_FUSED=0, or Backend::set_fusion(false)): a decode step
// is bound by the host's launch rate (docs/benchmarks.md), so consecutive ops are issued as one
// kernel where the model's sequence allows, with the same per-element code (bit-identical):
//  - add(y, x) is deferred; an rms_norm of y right after takes it (the residual add fused into
//    the norm); any other op issues it first.
//  - rope() is deferred; the one-row store_kv calls after it are queued, and when every queued
//    store reads from the rope's rows, one kernel rotates each row and then stores from it.
//  - rms_norm and swiglu also write their output as f16 (the "f16 shadow"); a matmul whose input
//    is exactly that output skips its f32 → f16 conversion kernel. Every other op voids it.
// Deferred work is issued, in issue order, by the next op that does not take it (bind()).
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/topk.h"

namespace lightserve::kernels {
namespace cuda {
namespace {

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

// Launch fusion's deferred add, and the f16 shadow: data = src[0, count) as f16 (the matmul
// input scratch), valid until the next op.
struct PendingAdd {
  float* y;
  const float* x;
  int64_t count;
};
struct F16Shadow {
  const float* src = nullptr;
  int64_t count = 0;
  const __half* data = nullptr;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : owned_(device) {
    cudaDeviceProp props{};
    LS_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    description_ = "cuda (" + std::string(props.name) + ", sm_" + std::to_string(props.major) +
                   std::to_string(props.minor) + ", " + std::to_string(ctx_.num_sms) + " SMs)";
    const char* fused = std::getenv("LIGHTSERVE_CUDA_FUSED");
    fused_ = fused == nullptr || (std::strcmp(fused, "0") != 0 && std::strcmp(fused, "off") != 0);
    if (!fused_) description_.insert(description_.size() - 1, ", unfused");
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
    // Deferred work may touch p: issue it first (errors surface at the next call).
    shadow_ = {};
    if (pending_add_ || pending_rope_ || !queued_stores_.empty()) {
      try {
        flush_pending();
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
    const int64_t cols = cw.cols();
    // Taken before bind() voids it: nothing was issued since it was written.
    const __half* shadow = shadow_.src == x && shadow_.count == n * cols ? shadow_.data : nullptr;
    bind();
    const Profiled profiled(profiler_, shadow != nullptr ? "matmul (f16 input fused)" : "matmul");
    const __half* x16 = shadow;
    if (x16 == nullptr) {
      __half* converted = x_f16_.get<__half>(n * cols);
      launch_f32_to_kv(ctx_.stream, grid_for(n * cols), x, cols, n, cols,
                       reinterpret_cast<uint16_t*>(converted), cols, /*bf16=*/false);
      x16 = converted;
    }
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
    launch_gather_rows(ctx_.stream, grid_for(count * cw.cols()), cw.data(), cw.cols(), device_ids,
                       count, out);
  }

  void rms_norm(const float* x, const float* weight, int64_t n, int64_t dim, float eps,
                float* y) override {
    if (n <= 0 || dim <= 0) return;
    // A deferred add into exactly these rows is done inside the norm (it is the latest op: any
    // other op in between would have issued it).
    std::optional<PendingAdd> add;
    if (pending_add_ && pending_add_->y == x && pending_add_->count == n * dim) {
      add = pending_add_;
      pending_add_.reset();
    }
    bind();
    const Profiled profiled(profiler_, add ? "add+rms_norm (fused)" : "rms_norm");
    const auto blocks = static_cast<unsigned>(std::min<int64_t>(n, int64_t{ctx_.num_sms} * 32));
    __half* y16 = fused_ ? x_f16_.get<__half>(n * dim) : nullptr;
    // x is written only with a residual, and then it is the add's (non-const) y.
    float* xw = add ? add->y : const_cast<float*>(x);
    launch_rms_norm(ctx_.stream, blocks, xw, add ? add->x : nullptr, weight, n, dim, eps, y, y16);
    if (y16 != nullptr) shadow_ = F16Shadow{y, n * dim, y16};
  }

  void rope(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
            int64_t row_stride, const RopeParams& params) override {
    const auto n = static_cast<int64_t>(positions.size());
    const int64_t pairs = n * heads * (head_dim / 2);
    if (pairs <= 0) return;
    bind();
    // Exactly the CPU's RopeTable::ensure step (kernels/cpu/cpu_backend.cpp), in f32.
    const float theta_scale = std::pow(params.freq_base, -2.0f / static_cast<float>(head_dim));
    RopeArgs args{};
    args.x = x;
    args.positions = upload_span(positions, positions_);
    args.n = n;
    args.heads = heads;
    args.head_dim = head_dim;
    args.row_stride = row_stride;
    args.theta_scale = theta_scale;
    args.neox = params.neox;
    args.freq_factors = params.freq_factors;
    if (fused_) {
      pending_rope_ = args;  // the K/V stores that follow may join it (issue_rope)
      return;
    }
    const Profiled profiled(profiler_, "rope");
    launch_rope(ctx_.stream, grid_for(pairs), args);
  }

  void add_bias(float* y, const float* bias, int64_t n, int64_t width,
                int64_t row_stride) override {
    if (n <= 0 || width <= 0) return;
    bind();
    const Profiled profiled(profiler_, "add_bias");
    launch_add_bias(ctx_.stream, grid_for(n * width), y, bias, n, width, row_stride);
  }

  void swiglu(const float* gate_up, int64_t n, int64_t ff, float* out) override {
    if (n <= 0 || ff <= 0) return;
    bind();
    const Profiled profiled(profiler_, "swiglu");
    __half* out16 = fused_ ? x_f16_.get<__half>(n * ff) : nullptr;
    launch_swiglu(ctx_.stream, grid_for(n * ff), gate_up, n, ff, out, out16);
    if (out16 != nullptr) shadow_ = F16Shadow{out, n * ff, out16};
  }

  void add(float* y, const float* x, int64_t count) override {
    if (count <= 0) return;
    bind();
    if (fused_) {
      pending_add_ = PendingAdd{y, x, count};  // an rms_norm of y right after takes it
      return;
    }
    launch_pending_add(PendingAdd{y, x, count});
  }

  void set_fusion(bool enabled) override {
    bind();
    fused_ = enabled;
  }

  void argmax_rows(const float* x, int64_t n, int64_t width, int32_t* ids) override {
    if (n <= 0 || width <= 0) return;
    bind();
    const Profiled profiled(profiler_, "argmax_rows");
    int32_t* device_ids = argmax_ids_.get<int32_t>(n);
    launch_argmax_rows(ctx_.stream, x, n, width, device_ids);
    LS_CUDA_CHECK(cudaMemcpyAsync(ids, device_ids, static_cast<size_t>(n) * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, ctx_.stream));
    LS_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    if (profiler_.enabled()) profiler_.collect();
  }

  void topk_rows(const float* x, int64_t width, std::span<const int32_t> rows, int32_t k,
                 Ranked* out) override {
    if (k < 1 || k > kMaxTopK) {
      throw std::invalid_argument("topk_rows: k = " + std::to_string(k) + " outside [1, " +
                                  std::to_string(kMaxTopK) + "]");
    }
    if (rows.empty()) return;
    bind();  // waits, like argmax_rows: the pairs are on the host when this returns
    const Profiled profiled(profiler_, "topk_rows");
    const auto num_rows = static_cast<int64_t>(rows.size());
    Ranked* device_out = topk_out_.get<Ranked>(num_rows * k);
    launch_topk_rows(ctx_.stream, x, width, upload_span(rows, topk_rows_), num_rows, k, device_out);
    LS_CUDA_CHECK(cudaMemcpyAsync(out, device_out,
                                  static_cast<size_t>(num_rows * k) * sizeof(Ranked),
                                  cudaMemcpyDeviceToHost, ctx_.stream));
    LS_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    if (profiler_.enabled()) profiler_.collect();
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
      // launch by the next op (every other op flushes the queue first, in bind()). The queue
      // stays younger than a deferred rope (which may take it), so a deferred add, or a width
      // change, issues everything first.
      LS_CUDA_CHECK(cudaSetDevice(ctx_.device));
      shadow_ = {};
      if (pending_add_ || (!queued_stores_.empty() && width != queued_width_)) flush_pending();
      queued_width_ = width;
      queued_stores_.push_back(QueuedStore{src, src_stride, dst, dst_stride, n, bf16 ? 1 : 0});
      return;
    }
    bind();
    const Profiled profiled(profiler_, "store_kv");
    launch_f32_to_kv(ctx_.stream, grid_for(n * width), src, src_stride, n, width, dst, dst_stride,
                     bf16);
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
  // Also issues the deferred work, so that every op sees it done in issue order, and voids the
  // f16 shadow (an op is about to be issued).
  void bind() {
    LS_CUDA_CHECK(cudaSetDevice(ctx_.device));
    shadow_ = {};
    flush_pending();
  }

  // The deferred add or rope (older than every queued store), then the queued stores. Each is
  // taken out before its launch, so a failure leaves nothing half-issued behind.
  void flush_pending() {
    if (pending_add_) {
      const PendingAdd add = *pending_add_;
      pending_add_.reset();
      launch_pending_add(add);
    }
    if (pending_rope_) {
      const RopeArgs rope = *pending_rope_;
      pending_rope_.reset();
      issue_rope(rope);
    }
    if (!queued_stores_.empty()) flush_stores();
  }

  void launch_pending_add(const PendingAdd& add) {
    const Profiled profiled(profiler_, "add");
    launch_add(ctx_.stream, grid_for(add.count), add.y, add.x, add.count);
  }

  // The deferred rope, with the queued stores in the same kernel when each of their rows lies
  // inside one of its rows (the decode's K and V rows of the fused q+k+v rows); else alone.
  void issue_rope(const RopeArgs& rope) {
    if (!queued_stores_.empty() && plan_row_stores(rope.x, rope.n, rope.row_stride, queued_stores_,
                                                   queued_width_, row_plan_)) {
      const Profiled profiled(profiler_, "rope+store_kv (fused)");
      const std::vector<RowStore>& stores = row_plan_.stores;
      const std::vector<int32_t>& row_begin = row_plan_.row_begin;
      const size_t stores_bytes = (stores.size() * sizeof(RowStore) + 15) / 16 * 16;
      const size_t begin_bytes = row_begin.size() * sizeof(int32_t);
      fused_host_.resize(stores_bytes + begin_bytes);
      std::memcpy(fused_host_.data(), stores.data(), stores.size() * sizeof(RowStore));
      std::memcpy(fused_host_.data() + stores_bytes, row_begin.data(), begin_bytes);
      auto* device = fused_descriptors_.get<uint8_t>(static_cast<int64_t>(fused_host_.size()));
      ctx_.upload_small(device, fused_host_.data(), static_cast<int64_t>(fused_host_.size()));
      queued_stores_.clear();
      const auto blocks =
          static_cast<unsigned>(std::min<int64_t>(rope.n, int64_t{ctx_.num_sms} * 16));
      launch_rope_then_store(ctx_.stream, blocks, rope, reinterpret_cast<RowStore*>(device),
                             reinterpret_cast<int32_t*>(device + stores_bytes), queued_width_);
      return;
    }
    const Profiled profiled(profiler_, "rope");
    launch_rope(ctx_.stream, grid_for(rope.n * rope.heads * (rope.head_dim / 2)), rope);
  }

  void flush_stores() {
    const Profiled profiled(profiler_, "store_kv (queued)");
    const auto count = static_cast<int64_t>(queued_stores_.size());
    QueuedStore* device = store_descriptors_.get<QueuedStore>(count);
    ctx_.upload_small(device, queued_stores_.data(),
                      count * static_cast<int64_t>(sizeof(QueuedStore)));
    queued_stores_.clear();
    launch_store_queued(ctx_.stream, device, count, queued_width_);
  }

  // Blocks for a grid-stride loop over `count` items: enough to fill the device, no more than the
  // items need.
  unsigned grid_for(int64_t count) const {
    const int64_t needed = (count + kElementwiseThreads - 1) / kElementwiseThreads;
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
  DeviceScratch argmax_ids_;  // argmax_rows' ids before they go to the host
  DeviceScratch topk_rows_;   // topk_rows' row list
  DeviceScratch topk_out_;    // and its (id, value) pairs before they go to the host

  // Launch fusion (the file's header).
  bool fused_ = true;
  std::optional<PendingAdd> pending_add_;
  std::optional<RopeArgs> pending_rope_;  // its positions already uploaded into positions_
  F16Shadow shadow_;
  RowStorePlan row_plan_;  // issue_rope's, reused
  std::vector<uint8_t> fused_host_;
  DeviceScratch fused_descriptors_;
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
