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
#include "kernels/cuda/cuda_graphs.h"
#include "kernels/cuda/cuda_owned.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/op_profiler.h"
#include "kernels/cuda/topk.h"

namespace lightserve::kernels {
namespace cuda {
namespace {

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

// What a recorded launch is, first in its signature (cuda_graphs.h).
enum LaunchKind : uint32_t {
  kLaunchConvert = 1,
  kLaunchGemm,
  kLaunchGather,
  kLaunchRmsNorm,
  kLaunchRope,
  kLaunchRopeStore,
  kLaunchAddBias,
  kLaunchSwiglu,
  kLaunchAdd,
  kLaunchStoreKv,
  kLaunchStoreQueued,
  kLaunchCopy,
};

// The largest decode step captured as a graph (rows; a bigger step runs eagerly).
constexpr int64_t kMaxGraphRows = 512;

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
    // LIGHTSERVE_CUDA_GRAPHS: 1 / on records decode steps and replays graphs; "eager" records
    // them at the bucket's rows but always issues the records (never captures): the same
    // launches, for tests and A/B timing of the capture alone.
    const char* graphs = std::getenv("LIGHTSERVE_CUDA_GRAPHS");
    const std::string mode = graphs == nullptr ? "" : graphs;
    graphs_ = mode == "1" || mode == "on" || mode == "eager";
    recorder_.set_capture(mode != "eager");
    if (graphs_) {
      description_.insert(description_.size() - 1,
                          mode == "eager" ? ", graphs recorded" : ", graphs");
      use_graph_workspace(true);
    }
  }

  ~CudaBackend() override {
    // Work still queued may read scratch that the members' destructors free; errors cannot be
    // reported from here.
    static_cast<void>(cudaStreamSynchronize(ctx_.stream));
    for (void* p : ctx_.retired_scratch) static_cast<void>(cudaFree(p));
    if (cublas_workspace_ != nullptr) static_cast<void>(cudaFree(cublas_workspace_));
    const StepRecorder::Counters& c = recorder_.counters();
    if (c.replayed + c.captured + c.eager + c.failed > 0) {
      std::fprintf(stderr,
                   "CUDA graphs: %lld decode steps launched as graphs (%lld captured), %lld "
                   "recorded and issued eagerly, %lld captures failed\n",
                   static_cast<long long>(c.replayed), static_cast<long long>(c.captured),
                   static_cast<long long>(c.eager), static_cast<long long>(c.failed));
    }
  }

  std::string description() const override { return description_; }

  // Allowed in a recorded step (nothing recorded points at new memory); a free is not, once
  // something is recorded.
  void* allocate(int64_t bytes) override {
    bind();
    return device_malloc(bytes);
  }

  void deallocate(void* p) override {
    // Deferred and recorded work may touch p: issue it first (errors surface at the next call).
    if (recording() &&
        (!recorder_.empty() || pending_add_ || pending_rope_ || !queued_stores_.empty())) {
      try {
        abandon_step();
      } catch (const std::exception&) {
      }
    }
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
    abandon_step();
    bind();
    const Profiled profiled(profiler_, "upload");
    ctx_.upload_small(dst, src, bytes);
  }

  void download(void* dst, const void* src, int64_t bytes) override {
    if (bytes <= 0) return;
    abandon_step();
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
    const cudaStream_t stream = ctx_.stream;
    launch(
        kLaunchCopy,
        [=](const uint8_t*) {
          LS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes),
                                        cudaMemcpyDeviceToDevice, stream));
        },
        dst, src, bytes);
  }

  void synchronize() override {
    abandon_step();
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
    abandon_step();
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
    const cudaStream_t stream = ctx_.stream;
    if (x16 == nullptr) {
      __half* converted = x_f16_.get<__half>(n * cols);
      const unsigned grid = grid_for(n * cols);
      launch(
          kLaunchConvert,
          [=](const uint8_t*) {
            launch_f32_to_kv(stream, grid, x, cols, n, cols, reinterpret_cast<uint16_t*>(converted),
                             cols, /*bf16=*/false);
          },
          grid, x, n, cols, converted);
      x16 = converted;
    }
    // cuBLAS is column-major: our row-major Y [n × rows] is its Yᵀ [rows × n], and
    // Yᵀ = Wᵀ · Xᵀ with W [rows × cols] read as a cols × rows matrix (op T, lda = cols).
    const float alpha = 1.0f, beta = 0.0f;
    const int m_rows = checked_int(cw.rows(), "weight rows");
    const int n_tokens = checked_int(n, "matmul tokens");
    const int k_cols = checked_int(cols, "weight cols");
    const cublasHandle_t cublas = ctx_.cublas;
    const __half* w16 = cw.data();
    launch(
        kLaunchGemm,
        [=](const uint8_t*) {
          LS_CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, m_rows, n_tokens, k_cols,
                                       &alpha, w16, CUDA_R_16F, k_cols, x16, CUDA_R_16F, k_cols,
                                       &beta, y, CUDA_R_32F, m_rows, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT));
        },
        w16, m_rows, n_tokens, k_cols, x16, y);
  }

  void embed(const Weight& table, std::span<const int32_t> ids, float* out) override {
    const auto& cw = static_cast<const CudaWeight&>(table);
    const auto count = static_cast<int64_t>(ids.size());
    if (count == 0 || cw.cols() == 0) return;
    bind();
    const Profiled profiled(profiler_, "embed");
    const cudaStream_t stream = ctx_.stream;
    const unsigned grid = grid_for(count * cw.cols());
    const __half* table16 = cw.data();
    const int64_t cols = cw.cols();
    if (recording()) {
      const int64_t at = recorder_.stage(ids.data(), static_cast<int64_t>(ids.size_bytes()), 0);
      launch(
          kLaunchGather,
          [=](const uint8_t* staged) {
            launch_gather_rows(stream, grid, table16, cols,
                               reinterpret_cast<const int32_t*>(staged + at), count, out);
          },
          grid, table16, cols, at, count, out);
      return;
    }
    const int32_t* device_ids = upload_span(ids, ids_);
    launch_gather_rows(stream, grid, table16, cols, device_ids, count, out);
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
    const float* residual = add ? add->x : nullptr;
    const cudaStream_t stream = ctx_.stream;
    launch(
        kLaunchRmsNorm,
        [=](const uint8_t*) {
          launch_rms_norm(stream, blocks, xw, residual, weight, n, dim, eps, y, y16);
        },
        blocks, xw, residual, weight, n, dim, eps, y, y16);
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
    // Recorded: the positions are staged, and the launch reads them at that offset.
    pending_rope_staged_ = -1;
    if (recording()) {
      pending_rope_staged_ =
          recorder_.stage(positions.data(), static_cast<int64_t>(positions.size_bytes()), 0);
      args.positions = nullptr;
    } else {
      args.positions = upload_span(positions, positions_);
    }
    args.n = n;
    args.heads = heads;
    args.head_dim = head_dim;
    args.row_stride = row_stride;
    args.theta_scale = theta_scale;
    args.neox = params.neox;
    args.freq_factors = params.freq_factors;
    pending_rope_ = args;  // the K/V stores that follow may join it (issue_rope)
    if (!fused_) flush_pending();
  }

  void add_bias(float* y, const float* bias, int64_t n, int64_t width,
                int64_t row_stride) override {
    if (n <= 0 || width <= 0) return;
    bind();
    const Profiled profiled(profiler_, "add_bias");
    const cudaStream_t stream = ctx_.stream;
    const unsigned grid = grid_for(n * width);
    launch(
        kLaunchAddBias,
        [=](const uint8_t*) { launch_add_bias(stream, grid, y, bias, n, width, row_stride); }, grid,
        y, bias, n, width, row_stride);
  }

  void swiglu(const float* gate_up, int64_t n, int64_t ff, float* out) override {
    if (n <= 0 || ff <= 0) return;
    bind();
    const Profiled profiled(profiler_, "swiglu");
    __half* out16 = fused_ ? x_f16_.get<__half>(n * ff) : nullptr;
    const cudaStream_t stream = ctx_.stream;
    const unsigned grid = grid_for(n * ff);
    launch(
        kLaunchSwiglu,
        [=](const uint8_t*) { launch_swiglu(stream, grid, gate_up, n, ff, out, out16); }, grid,
        gate_up, n, ff, out, out16);
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
    abandon_step();
    bind();
    fused_ = enabled;
  }

  int64_t graph_launches() const override { return recorder_.counters().replayed; }

  void set_graphs(bool enabled) override {
    abandon_step();
    bind();
    if (!enabled) recorder_.clear();
    if (enabled != graphs_) use_graph_workspace(enabled);
    graphs_ = enabled;
  }

  // A pure decode step (cuda_graphs.h): recorded at the bucket's row count, unless graphs are off
  // or the profiler times each op.
  int64_t begin_decode_step(int64_t rows) override {
    abandon_step();
    if (!graphs_ || profiler_.enabled()) return 0;
    const int64_t bucket = decode_bucket_rows(rows, kMaxGraphRows);
    if (bucket == 0) return 0;
    bind();  // deferred work issued before the step's first recorded launch
    recorder_.begin(bucket);
    return bucket;
  }

  void end_decode_step() override {
    if (!recording()) return;
    LS_CUDA_CHECK(cudaSetDevice(ctx_.device));
    flush_pending();  // recorded: the step's last deferred launches
    shadow_ = {};
    recorder_.finish();
  }

  void argmax_rows(const float* x, int64_t n, int64_t width, int32_t* ids) override {
    if (n <= 0 || width <= 0) return;
    abandon_step();
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
    abandon_step();  // reads results back: never part of a recorded step
    bind();          // waits, like argmax_rows: the pairs are on the host when this returns
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
    abandon_step();
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
    const cudaStream_t stream = ctx_.stream;
    const unsigned grid = grid_for(n * width);
    launch(
        kLaunchStoreKv,
        [=](const uint8_t*) {
          launch_f32_to_kv(stream, grid, src, src_stride, n, width, dst, dst_stride, bf16);
        },
        grid, src, src_stride, n, width, dst, dst_stride, bf16);
  }

  void attention(const float* q, std::span<const AttentionSeq> seqs, const AttentionShape& shape,
                 float* out) override {
    bind();
    const Profiled profiled(profiler_, "attention");
    if (recording()) {
      if (attention_.record_decode(q, seqs, shape, out, recorder_)) return;
      abandon_step();  // not a decode's attention: the step goes on eagerly
    }
    attention_.attention(q, seqs, shape, out);
  }

  float lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n, int32_t w_last,
                   int32_t sink, int32_t window, const AttentionShape& shape, LazyScore score,
                   float* head_ratios) override {
    abandon_step();
    bind();
    const Profiled profiled(profiler_, "lazy_ratio");
    return attention_.lazy_ratio(q, lse, kv, n, w_last, sink, window, shape, score, head_ratios);
  }

  void copy_rows_f16(const uint16_t* src, int64_t src_stride, int64_t count, int64_t width,
                     uint16_t* dst, int64_t dst_stride) override {
    if (count <= 0 || width <= 0) return;
    abandon_step();
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
    abandon_step();
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
    const cudaStream_t stream = ctx_.stream;
    const unsigned grid = grid_for(add.count);
    launch(
        kLaunchAdd, [=](const uint8_t*) { launch_add(stream, grid, add.y, add.x, add.count); },
        grid, add.y, add.x, add.count);
  }

  // The deferred rope, with the queued stores in the same kernel when each of their rows lies
  // inside one of its rows (the decode's K and V rows of the fused q+k+v rows); else alone.
  // Recorded: the rope's positions were staged at pending_rope_staged_, and the descriptors are
  // staged here, padded to the bucket (padded_count), so that the launch's signature does not
  // depend on how many rows of the bucket are real.
  void issue_rope(const RopeArgs& rope) {
    const cudaStream_t stream = ctx_.stream;
    const int64_t positions_at = pending_rope_staged_;
    pending_rope_staged_ = -1;
    auto with_positions = [rope, positions_at](const uint8_t* staged) {
      RopeArgs a = rope;
      if (positions_at >= 0) a.positions = reinterpret_cast<const int32_t*>(staged + positions_at);
      return a;
    };
    if (!queued_stores_.empty() && plan_row_stores(rope.x, rope.n, rope.row_stride, queued_stores_,
                                                   queued_width_, row_plan_)) {
      const Profiled profiled(profiler_, "rope+store_kv (fused)");
      const std::vector<RowStore>& stores = row_plan_.stores;
      const std::vector<int32_t>& row_begin = row_plan_.row_begin;
      const int64_t store_count =
          recording() ? padded_count(static_cast<int64_t>(stores.size()), recorder_.bucket_rows())
                      : static_cast<int64_t>(stores.size());
      const size_t stores_bytes =
          (static_cast<size_t>(store_count) * sizeof(RowStore) + 15) / 16 * 16;
      const size_t begin_bytes = row_begin.size() * sizeof(int32_t);
      fused_host_.assign(stores_bytes + begin_bytes, 0);
      std::memcpy(fused_host_.data(), stores.data(), stores.size() * sizeof(RowStore));
      std::memcpy(fused_host_.data() + stores_bytes, row_begin.data(), begin_bytes);
      queued_stores_.clear();
      const auto blocks =
          static_cast<unsigned>(std::min<int64_t>(rope.n, int64_t{ctx_.num_sms} * 16));
      const int64_t width = queued_width_;
      const auto bytes = static_cast<int64_t>(fused_host_.size());
      if (recording()) {
        const int64_t at = recorder_.stage(fused_host_.data(), bytes, 0);
        launch(
            kLaunchRopeStore,
            [=](const uint8_t* staged) {
              launch_rope_then_store(stream, blocks, with_positions(staged),
                                     reinterpret_cast<const RowStore*>(staged + at),
                                     reinterpret_cast<const int32_t*>(staged + at + stores_bytes),
                                     width);
            },
            blocks, rope.x, positions_at, rope.n, rope.heads, rope.head_dim, rope.row_stride,
            rope.theta_scale, rope.neox, rope.freq_factors, at, bytes, stores_bytes, width);
        return;
      }
      auto* device = fused_descriptors_.get<uint8_t>(bytes);
      ctx_.upload_small(device, fused_host_.data(), bytes);
      launch_rope_then_store(stream, blocks, rope, reinterpret_cast<RowStore*>(device),
                             reinterpret_cast<int32_t*>(device + stores_bytes), width);
      return;
    }
    const Profiled profiled(profiler_, "rope");
    const unsigned grid = grid_for(rope.n * rope.heads * (rope.head_dim / 2));
    launch(
        kLaunchRope,
        [=](const uint8_t* staged) { launch_rope(stream, grid, with_positions(staged)); }, grid,
        rope.x, rope.positions, positions_at, rope.n, rope.heads, rope.head_dim, rope.row_stride,
        rope.theta_scale, rope.neox, rope.freq_factors);
  }

  void flush_stores() {
    const Profiled profiled(profiler_, "store_kv (queued)");
    const auto count = static_cast<int64_t>(queued_stores_.size());
    const cudaStream_t stream = ctx_.stream;
    const int64_t width = queued_width_;
    if (recording()) {
      // Padded with zero-row descriptors (no-ops) to the bucket's multiple.
      const int64_t padded = padded_count(count, recorder_.bucket_rows());
      const auto bytes = count * static_cast<int64_t>(sizeof(QueuedStore));
      const int64_t at = recorder_.stage(queued_stores_.data(), bytes,
                                         padded * static_cast<int64_t>(sizeof(QueuedStore)));
      queued_stores_.clear();
      launch(
          kLaunchStoreQueued,
          [=](const uint8_t* staged) {
            launch_store_queued(stream, reinterpret_cast<const QueuedStore*>(staged + at), padded,
                                width);
          },
          at, padded, width);
      return;
    }
    QueuedStore* device = store_descriptors_.get<QueuedStore>(count);
    ctx_.upload_small(device, queued_stores_.data(),
                      count * static_cast<int64_t>(sizeof(QueuedStore)));
    queued_stores_.clear();
    launch_store_queued(stream, device, count, width);
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

  bool recording() const { return ctx_.recording != nullptr; }

  // With graphs, cuBLAS works in a workspace of ours (cublasSetWorkspace), so that a GEMM picks
  // the same algorithm when recorded, captured or issued eagerly (under capture it cannot
  // allocate one of its own), and the graphs' GEMMs keep a valid workspace. Off: the handle's
  // default workspace again (cublasSetStream resets it), as the default path has always had.
  void use_graph_workspace(bool enabled) {
    if (enabled) {
      if (cublas_workspace_ == nullptr) cublas_workspace_ = device_malloc(kCublasWorkspaceBytes);
      LS_CUBLAS_CHECK(cublasSetWorkspace(ctx_.cublas, cublas_workspace_, kCublasWorkspaceBytes));
    } else {
      LS_CUBLAS_CHECK(cublasSetStream(ctx_.cublas, ctx_.stream));
    }
  }

  // Issues a launch now (f(nullptr)), or, while a decode step is recorded, appends it to the step
  // after its signature: `kind` and every value f bakes into the launch (cuda_graphs.h).
  template <typename F, typename... Values>
  void launch(LaunchKind kind, F&& f, const Values&... signature) {
    if (!recording()) {
      f(nullptr);
      return;
    }
    recorder_.signature().put(kind, signature...);
    recorder_.add(std::forward<F>(f));
  }

  // Before an op that cannot be recorded: the deferred work is recorded, then everything
  // recorded so far is issued eagerly and the step goes on as usual.
  void abandon_step() {
    if (!recording()) return;
    LS_CUDA_CHECK(cudaSetDevice(ctx_.device));
    shadow_ = {};
    flush_pending();
    recorder_.abandon();
  }

  // Profiled ops (op_profiler.h) are never recorded: begin_decode_step declines while profiling.
  OwnedContext owned_;  // first: outlives every member below that issues work on its stream
  CudaContext& ctx_ = owned_.ctx;
  OpProfiler profiler_{ctx_.stream};
  StepRecorder recorder_{ctx_};  // CUDA graphs of decode steps
  bool graphs_ = false;
  static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // cuBLAS's Hopper advice
  void* cublas_workspace_ = nullptr;  // with graphs (use_graph_workspace); freed last
  CudaAttention attention_{ctx_};
  DeviceScratch x_f16_{ctx_};      // matmul's activations in f16 (read by recorded launches)
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
  int64_t pending_rope_staged_ = -1;      // recorded: its positions' offset in the staged bytes
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
