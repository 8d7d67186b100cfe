// The compute interface the model is written against (docs/design.md §2). The CPU backend is the
// oracle every other backend is tested against. Every buffer an op reads or writes is backend
// memory (Backend::allocate, kernels::Buffer): host memory for the CPU backend, device memory for
// the CUDA backend. Arguments passed as std::span (ids, positions) and the AttentionSeq array
// itself (with its block tables) are host memory. All shapes are explicit. Calls are made from one
// thread (the engine thread); a backend may run them asynchronously, in order: download() and
// lazy_ratio() wait for the work before them.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "kernels/dtype.h"
#include "kernels/topk.h"

namespace lightserve::kernels {

// A row-major weight matrix in a file's own encoding: `rows` output features, each a row of
// `cols` input values (a whole number of blocks for quantized types). Not owned.
struct WeightView {
  DType type = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
};

// A weight in the backend's resident form (possibly repacked). Created by Backend::make_weight.
class Weight {
 public:
  virtual ~Weight() = default;
  virtual DType type() const = 0;
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;
  // Bytes this weight holds in backend memory beyond the file mapping it may reference.
  virtual int64_t resident_bytes() const = 0;
};

// Where one sequence's keys and values of one layer live: rows of kv_heads · head_dim 16-bit
// values (f16 or bf16: AttentionShape::kv_type). Three layouts:
//  - kContiguous: token t at row t (row_stride elements apart).
//  - kPaged: token t in block block_table[t / block_size] at row t % block_size; block b starts
//    block_stride elements after k (and v).
//  - kRing (a lazy layer): token t < sink at ring row t; token t ≥ sink at ring row
//    sink + (t − sink) % window. The ring holds tokens [0, sink) ∪ [n − window, n) of the n cached.
//    Keys keep their original RoPE positions. With a block_table the ring is paged like kPaged
//    (ring row r in block block_table[r / block_size] at row r % block_size: the KV arena's
//    pages); without one, ring row r is at row r.
struct KvView {
  enum class Kind { kContiguous, kPaged, kRing };
  Kind kind = Kind::kContiguous;
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  int64_t row_stride = 0;
  const int32_t* block_table = nullptr;  // kPaged, and kRing when paged
  int32_t block_size = 0;                // kPaged, and kRing when paged
  int64_t block_stride = 0;              // kPaged, and kRing when paged
  int32_t sink = 0;                      // kRing
  int32_t window = 0;                    // kRing
};

// One sequence of a batched causal attention call. Its queries are rows
// [first_row, first_row + num_queries) of the query buffer, at consecutive positions starting at
// first_pos. The query at position p attends the cached keys 0..p, except with a kRing view, where
// it attends the streaming set {t ≤ p : t < sink or t > p − window} (num_queries must then be 1,
// so that every key it needs is still in the ring). The cache must already hold the keys and
// values of every attended position.
struct AttentionSeq {
  int64_t first_row = 0;
  int32_t num_queries = 0;
  int32_t first_pos = 0;
  KvView kv;
  // Optional: the log-sum-exp of each query's scaled scores, [num_queries × heads] (query-major),
  // written when non-null. LightTransfer's lazy ratio reuses it.
  float* lse = nullptr;
};

struct AttentionShape {
  int32_t heads = 0;
  int32_t kv_heads = 0;  // heads / kv_heads query heads share one KV head (GQA)
  int32_t head_dim = 0;
  int64_t q_stride = 0;    // elements between consecutive query rows
  int64_t out_stride = 0;  // elements between consecutive output rows
  float scale = 1.0f;      // usually 1/sqrt(head_dim)
  // llama.cpp's numerics: round the normalized attention probabilities to f16 before they
  // weight the values (what its non-flash attention does with an f16 cache). Costs a second pass
  // over the keys. The model is very sensitive to this on some inputs: off, greedy decoding can
  // leave llama.cpp's path at near-ties.
  bool round_probabilities_f16 = false;
  // The cache's element type, kF16 or kBF16 (kernels/dtype.h, is_kv_type). Queries are rounded
  // to it before the dot products, and with round_probabilities_f16 the probabilities too (what
  // llama.cpp does with a cache of that type).
  DType kv_type = DType::kF16;
};

// How Backend::lazy_ratio scores a layer's laziness from its per-head ratios (docs/quality.md).
enum class LazyScore : uint8_t {
  kMean,         // the paper's: mean over the last w_last queries and every query head
  kHeadMin,      // head-aware: the least lazy head's ratio over the last w_last queries
  kHeadMinLast,  // head-aware at the final query only (w_last taken as 1)
};

// How rope() pairs and scales the values of a head.
struct RopeParams {
  float freq_base = 10000.0f;
  // false: pairs (2i, 2i+1), GGUF's llama layout (convert_hf_to_gguf.py permutes llama's Q/K
  // rows into it). true: NEOX / rotate-half pairs (i, i + head_dim/2), Hugging Face's layout,
  // which llama.cpp keeps for qwen2.
  bool neox = false;
  // Optional, backend memory: head_dim/2 factors; pair i's angle is divided by freq_factors[i]
  // (Llama-3.1's rope_freqs.weight). Null: all 1.
  const float* freq_factors = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu (avx512-vnni, amx, 2 threads)": what runs, for logs and `info`.
  virtual std::string description() const = 0;

  // Backend memory, uninitialized; throws std::bad_alloc when there is none left. bytes > 0.
  virtual void* allocate(int64_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  // host → backend memory.
  virtual void upload(void* dst, const void* src, int64_t bytes) = 0;
  // backend → host memory, after every op issued before it has finished.
  virtual void download(void* dst, const void* src, int64_t bytes) = 0;
  // Within backend memory; the ranges must not overlap.
  virtual void copy(void* dst, const void* src, int64_t bytes) = 0;
  // Waits for every op issued so far (benchmarks time with it).
  virtual void synchronize() {}
  // Whether backend memory is host memory (the CPU backend), so that callers may skip copies.
  virtual bool host_memory() const { return false; }
  // The device's free and total memory in bytes (every process's use counted), after the work
  // issued so far has finished; false where the backend has no memory of its own to size (the
  // CPU). Sizes the KV arena from --gpu-memory-utilization (serving/gpu_memory.h).
  virtual bool memory_info(int64_t* free_bytes, int64_t* total_bytes) {
    (void)free_bytes;
    (void)total_bytes;
    return false;
  }

  // The resident form of the row-wise concatenation of `parts` (equal cols; types may differ, as
  // Q, K and V of a K-quant mix do: each part keeps its own type's numerics), so that e.g. Q, K
  // and V projections run as one matmul. `parts` must stay valid while the weight lives (the CPU
  // backend may read them in place from the file mapping). Weight::type() is the first part's.
  virtual std::unique_ptr<Weight> make_weight(std::span<const WeightView> parts) = 0;

  // y[n × w.rows] = x[n × w.cols] · wᵀ, row-major, f32.
  virtual void matmul(const Weight& w, const float* x, int64_t n, float* y) = 0;

  // out[i] = row ids[i] of `table`, dequantized to f32. ids are checked by the caller.
  virtual void embed(const Weight& table, std::span<const int32_t> ids, float* out) = 0;

  // y = x / sqrt(mean(x²) + eps) · weight, per row of `dim` values; y may alias x.
  virtual void rms_norm(const float* x, const float* weight, int64_t n, int64_t dim, float eps,
                        float* y) = 0;

  // Rotary embedding in place. Pair i (i < head_dim/2) of each head is rotated by
  // pos · freq_base^(−2i/head_dim) / freq_factors[i] (θ built as llama.cpp builds it, in f32).
  // Row r holds `heads` heads at x + r·row_stride.
  virtual void rope(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
                    int64_t row_stride, const RopeParams& params) = 0;

  // y[r·row_stride + j] += bias[j] for r < n, j < width: a bias broadcast over rows (Qwen2's
  // Q/K/V biases, stacked as the Q/K/V projections are).
  virtual void add_bias(float* y, const float* bias, int64_t n, int64_t width,
                        int64_t row_stride) = 0;

  // out[r, j] = silu(gate_up[r, j]) · gate_up[r, ff + j]; rows of gate_up hold 2·ff values.
  virtual void swiglu(const float* gate_up, int64_t n, int64_t ff, float* out) = 0;

  // y += x, elementwise.
  virtual void add(float* y, const float* x, int64_t count) = 0;

  // Converts n rows of `width` f32 values (src_stride apart) to rows of the KV type `type` (f16
  // or bf16, rounded to nearest even; dst_stride apart).
  virtual void store_kv(const float* src, int64_t src_stride, int64_t n, int64_t width,
                        uint16_t* dst, int64_t dst_stride, DType type) = 0;

  // Causal grouped-query attention over cached keys/values (of type shape.kv_type) for several
  // sequences at once. out rows correspond to q rows.
  virtual void attention(const float* q, std::span<const AttentionSeq> seqs,
                         const AttentionShape& shape, float* out) = 0;

  // LightTransfer's lazy ratio of one layer for one prompt of n tokens (docs/design.md §4). The
  // per-head ratio of head h is its mean attention mass, over the scored queries, on the keys [0,
  // sink) ∪ [n − window, n) (only keys ≤ the query). `score` picks the scored queries and how the
  // heads combine (LazyScore); head_ratios, when not null, receives the [heads] per-head ratios.
  // q holds the prompt's n query rows (q_stride apart, as passed to attention), lse their
  // log-sum-exp [n × heads] from attention(), kv the prompt's keys (kContiguous). Scores are
  // computed exactly as attention() computes them, so every ratio is in [0, 1]; the cost is
  // O(w_last · (sink + window)), independent of n.
  virtual float lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n,
                           int32_t w_last, int32_t sink, int32_t window,
                           const AttentionShape& shape, LazyScore score, float* head_ratios) = 0;

  // Copies `count` rows of width 16-bit values (f16 or bf16) from src to dst (strides in elements);
  // used to move a layer's keys and values between scratch, blocks and slots.
  virtual void copy_rows_f16(const uint16_t* src, int64_t src_stride, int64_t count, int64_t width,
                             uint16_t* dst, int64_t dst_stride) = 0;

  // Many copies of `rows` consecutive rows of width f16 values each (rows `width` apart in both
  // places), in one call: how a prefill moves a layer's keys and values from scratch into its
  // blocks or slot. Destinations must not overlap each other or any source.
  struct RowRun {
    const uint16_t* src = nullptr;
    uint16_t* dst = nullptr;
    int64_t rows = 0;
  };
  virtual void copy_runs_f16(std::span<const RowRun> runs, int64_t width) = 0;

  // ids[r] = the index of the largest of row r's `width` values (std::max_element's, as
  // sampling::argmax: the first on ties; a NaN never replaces a value), for n rows `width` apart
  // in backend memory; ids is host memory, filled when this returns. A greedy step's only
  // download (n ids instead of n × vocab logits). The default downloads the rows and scans them
  // on the host (the CPU backend, whose memory is the host's, scans in place).
  virtual void argmax_rows(const float* x, int64_t n, int64_t width, int32_t* ids);

  // For each i < rows.size(): the k best of row rows[i] (its `width` values start at
  // x + rows[i] · width, backend memory) in rank order (kernels/topk.h: value descending, index
  // ascending on equal values, NaN as std::max_element sees it; k = 1 gives argmax_rows' id) into
  // out[i · k, i · k + k), host memory, filled when this returns; when k > width a row's last
  // k − width entries are {-1, NaN}. 1 ≤ k ≤ kMaxTopK; `rows` is host memory. What a step brings
  // back when its samplers read no more than their top few tokens (n × k pairs instead of n ×
  // vocab logits). The default copies each row to the host and runs topk_row (the CPU backend
  // reads it in place).
  virtual void topk_rows(const float* x, int64_t width, std::span<const int32_t> rows, int32_t k,
                         Ranked* out);

  // Whether the backend may issue consecutive ops as fused kernels (the CUDA backend: add +
  // rms_norm, rope + the K/V stores after it, f16 matmul inputs written by rms_norm and swiglu;
  // bit-identical results, fewer launches). On by default (the CUDA backend reads
  // LIGHTSERVE_CUDA_FUSED=0 at creation as off); benchmarks time both. The CPU has nothing to
  // fuse and ignores it.
  virtual void set_fusion(bool enabled) { (void)enabled; }

  // CUDA graphs of decode steps (the CUDA backend; opt-in: LIGHTSERVE_CUDA_GRAPHS=1 at creation
  // or set_graphs(true); docs/design.md). A forward pass that is a pure decode step (every
  // sequence one new token through every layer) calls begin_decode_step(rows) first: 0 means
  // "run the step as usual" (the default, and the CPU's); a positive value is the number of rows
  // the step must be computed with — rows rounded up to the backend's bucket, the extra rows
  // being padding that the caller feeds harmless inputs (a valid token id, position 0), stores no
  // K/V for, gives no attention sequence, and ignores in the output. The caller then issues the
  // step's ops and calls end_decode_step() after the last op whose work belongs to the step and
  // before reading any result back (download, argmax_rows). Between the two calls the backend may
  // record instead of issuing, and replay a graph of an earlier step with the same launches; an
  // op it cannot record makes it issue what it has and go on eagerly, so any sequence of ops stays
  // correct. end_decode_step() must also be called when the step is cut short by an error.
  virtual int64_t begin_decode_step(int64_t rows) {
    (void)rows;
    return 0;
  }
  virtual void end_decode_step() {}
  // Whether begin_decode_step may record and replay (the CUDA backend: off unless
  // LIGHTSERVE_CUDA_GRAPHS=1). Benchmarks time both; the CPU ignores it.
  virtual void set_graphs(bool enabled) { (void)enabled; }
  // Decode steps launched as one captured graph so far (tests and benchmarks check that graphs
  // did run); 0 for a backend without them.
  virtual int64_t graph_launches() const { return 0; }
};

// The CPU backend with `num_threads` workers (0: one per core); picks AVX2 / AVX-512 / AMX
// kernels at run time.
std::unique_ptr<Backend> make_cpu_backend(int num_threads = 0);

// The CUDA backend on device `device` (kernels/cuda: cuBLAS and our own kernels). Null with the
// reason in *error when this build has no CUDA (no nvcc at configure time), no device is visible,
// or the device cannot run our kernels.
std::unique_ptr<Backend> make_cuda_backend(int device, std::string* error);

// The backend `device` names: "cpu" (with `num_threads` workers), "cuda" or "cuda:N" (GPU N).
// Null with the reason in *error for another name or when the GPU cannot be used.
std::unique_ptr<Backend> make_backend(const std::string& device, int num_threads,
                                      std::string* error);

// Whether make_cuda_backend() was compiled in (the reason it returns null can still be "no
// device").
bool cuda_compiled();

// A growable array in a backend's memory, owned. Move-only; empty until reserve().
class Buffer {
 public:
  Buffer() = default;
  ~Buffer() { reset(); }
  Buffer(Buffer&& other) noexcept { swap(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      reset();
      swap(other);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // At least `bytes` of capacity on `backend`; the contents are lost when it grows (or when the
  // backend changes).
  void reserve(Backend& backend, int64_t bytes) {
    if (backend_ == &backend && bytes <= capacity_) return;
    reset();
    if (bytes <= 0) return;
    data_ = backend.allocate(bytes);
    backend_ = &backend;
    capacity_ = bytes;
  }
  template <typename T>
  T* reserve(Backend& backend, int64_t count) {
    reserve(backend, count * static_cast<int64_t>(sizeof(T)));
    return get<T>();
  }
  // A copy of `bytes` of backend memory at src (reserving as needed).
  void assign(Backend& backend, const void* src, int64_t bytes) {
    reserve(backend, bytes);
    if (bytes > 0) backend.copy(data_, src, bytes);
  }
  void reset() {
    if (data_ != nullptr) backend_->deallocate(data_);
    data_ = nullptr;
    backend_ = nullptr;
    capacity_ = 0;
  }
  void swap(Buffer& other) noexcept {
    std::swap(backend_, other.backend_);
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
  }

  template <typename T>
  T* get() const {
    return static_cast<T*>(data_);
  }
  int64_t capacity() const { return capacity_; }
  bool empty() const { return data_ == nullptr; }

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  int64_t capacity_ = 0;
};

}  // namespace lightserve::kernels
