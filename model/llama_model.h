// A LLaMA-family model loaded from GGUF, and its forward pass written once against
// kernels::Backend: batched over several sequences of different lengths, prefill and decode in
// the same call (each sequence appends its new tokens to its own KV cache). Each sequence may run
// a range of layers only (layered prefill: a long prompt advances a few layers per engine step
// while other sequences decode); at each layer the matmuls batch the sequences that run it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/model_source.h"
#include "model/sequence_kv.h"
#include "model/tokenizer.h"

namespace lightserve::model {

struct LoadOptions {
  ProgressFn progress;  // (bytes done, bytes total) while weights are read and prepared
  // Attention numerics of llama.cpp (probabilities rounded to f16 before weighting the values),
  // so greedy decoding follows llama.cpp's default CPU path. Off: one-pass flash attention in f32.
  bool llama_cpp_attention = true;
  // The KV cache's element type: kF16 (default) or kBF16 (kernels::is_kv_type). Both take 2
  // bytes per value; bf16 trades 3 bits of mantissa for f32's exponent range.
  kernels::DType kv_type = kernels::DType::kF16;
};

// The key/value cache (f16 or bf16) of one sequence, contiguous, every layer full: the plain model.
// For every layer, `capacity` rows of kv_heads·head_dim keys and as many values, in the memory of
// the backend of the first forward call (allocated then).
class SequenceCache final : public SequenceKv {
 public:
  SequenceCache(const LlamaConfig& config, int32_t capacity);
  int32_t capacity() const override { return capacity_; }
  int32_t size() const override { return size_; }
  void truncate(int32_t size) { size_ = std::min(size_, size); }
  int64_t bytes() const { return 2 * layer_stride_ * num_layers_ * 2; }

  Status check_append(int32_t n) const override;
  LayerKv store_layer(kernels::Backend& backend, int32_t layer, const float* k, const float* v,
                      int64_t src_stride, int32_t n, kernels::DType kv_type) override;
  void finish_layer(kernels::Backend&, int32_t, const float*, const kernels::AttentionShape&,
                    int32_t) override {}
  void advance(int32_t n) override { size_ += n; }

 private:
  uint16_t* keys(int32_t layer) { return keys_.get<uint16_t>() + layer * layer_stride_; }
  uint16_t* values(int32_t layer) { return values_.get<uint16_t>() + layer * layer_stride_; }

  int32_t capacity_;
  int32_t size_ = 0;
  int32_t num_layers_;
  int64_t row_;
  int64_t layer_stride_;
  kernels::Buffer keys_;
  kernels::Buffer values_;
};

// One sequence's part of a forward call: `tokens` are appended at positions cache->size() ...
// through layers [layer_begin, layer_end) (kAllLayers: to the last layer). A range that stops
// before the last layer parks the tokens' hidden states in cache->pending(); the sequence's next
// entry resumes them: same tokens, layer_begin = pending().layers_done. Only an entry that runs
// the last layer appends its tokens (cache->size() grows) and gets logits: for every new token
// with all_logits, else for the last one only.
// Receives every new token's logits row of an entry (prompt logprobs) without T × vocab floats
// ever existing at once: rows [first, first + count) in host memory, vocab_size floats each,
// called in token order over chunks of at most LlamaModel::kRowChunk rows.
using RowSink = std::function<void(int32_t first, int32_t count, const float* rows)>;

struct BatchEntry {
  static constexpr int32_t kAllLayers = -1;

  SequenceKv* cache = nullptr;
  std::span<const int32_t> tokens;
  bool all_logits = false;
  int32_t layer_begin = 0;
  int32_t layer_end = kAllLayers;
  // With the last layer: every new token's row goes to *row_sink (the entry still gets only its
  // last row in forward's `logits`, unless all_logits).
  const RowSink* row_sink = nullptr;
  // forward_candidates: > 0 returns the row's best num_candidates (id, logit) pairs instead of
  // its logits (at most kernels::kMaxTopK; not with all_logits or a row sink). forward() and
  // forward_argmax() ignore it.
  int32_t num_candidates = 0;
};

class LlamaModel {
 public:
  // Loads, validates and prepares `source` (a GGUF path, or a dummy model) for `backend` (which
  // must outlive the model).
  static Result<std::unique_ptr<LlamaModel>> load(const ModelSource& source,
                                                  kernels::Backend& backend,
                                                  const LoadOptions& options = {});
  ~LlamaModel();

  const LlamaConfig& config() const { return config_; }
  const GgufFile& file() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // Null when the chat template is missing or of a family lightserve cannot render (the reason
  // is in chat_error()).
  const ChatTemplate* chat_template() const { return chat_ ? &*chat_ : nullptr; }
  const std::string& chat_error() const { return chat_error_; }
  kernels::Backend& backend() const { return backend_; }

  int64_t weight_file_bytes() const { return weight_file_bytes_; }
  // The KV cache type every forward() stores and attends (LoadOptions::kv_type).
  kernels::DType kv_type() const { return kv_type_; }
  int64_t weight_resident_bytes() const;

  // Runs the batch; on success `logits` holds one row of vocab_size floats per output of the
  // entries that ran the last layer (in entry order; all new tokens of an all_logits entry, else
  // its last token); empty when none did. Errors: empty entry, token id out of range, cache
  // capacity exceeded, a layer range outside the model or not where the sequence's pending
  // tokens stopped, one sequence twice — checked before any state changes.
  Status forward(std::span<const BatchEntry> batch, std::vector<float>& logits);
  // forward(), but each output row's argmax (the greedy token: sampling::argmax's) instead of
  // its logits, computed by the backend (Backend::argmax_rows), so a GPU sends back ids only.
  // Entries with a row_sink are refused (their rows need the logits).
  Status forward_argmax(std::span<const BatchEntry> batch, std::vector<int32_t>& ids);
  // forward(), but the returned row of an entry with num_candidates = k > 0 comes back as its k
  // best (id, logit) pairs in rank order (Backend::topk_rows; sampling::ranks_before's order),
  // appended to `candidates` in entry order, and not in `logits`, which holds the other entries'
  // rows as forward() would. A GPU then sends back k pairs for such a row, not vocab_size floats.
  // When k > vocab_size the row's last k − vocab_size pairs are {-1, NaN}.
  Status forward_candidates(std::span<const BatchEntry> batch, std::vector<float>& logits,
                            std::vector<kernels::Ranked>& candidates);
  static constexpr int64_t kRowChunk = 64;  // rows per output matmul when a row sink is set

 private:
  struct Layer;
  explicit LlamaModel(kernels::Backend& backend);
  // forward(), forward_argmax() and forward_candidates(): exactly one of logits and ids is
  // non-null; candidates only with logits.
  Status run_forward(std::span<const BatchEntry> batch, std::vector<float>* logits,
                     std::vector<int32_t>* ids, std::vector<kernels::Ranked>* candidates);
  Status output_through_sinks(std::span<const BatchEntry> batch, int64_t num_out,
                              std::vector<float>& logits, std::vector<kernels::Ranked>* candidates);
  // After the output matmul (`out`, on the backend) when some returned rows want candidates (no
  // row sinks): one topk_rows call for those of the first `num_rows` rows, the other rows copied
  // out whole (rows past num_rows are a padded decode step's padding).
  void output_candidates(std::span<const BatchEntry> batch, int64_t num_rows, const float* out,
                         std::vector<float>& logits, std::vector<kernels::Ranked>& candidates);
  Status prepare(const LoadOptions& options);
  Status validate(std::span<const BatchEntry> batch) const;
  // Packs into scratch_.x the rows of the entries that run `layer`, in entry order: rows already
  // packed move, rows of entries that begin here are embedded (layer 0) or restored from their
  // pending hidden states, and rows of entries that ended here are parked in pending().
  void pack_rows(std::span<const BatchEntry> batch, int32_t layer);
  // A pure decode step at layer 0 padded to `padded_rows` rows (Backend::begin_decode_step):
  // entry i at row i, one embed call for every row, padded rows at token 0 and position 0.
  void pack_decode_rows(std::span<const BatchEntry> batch, int64_t padded_rows);
  // One layer over the packed rows; the last layer keeps only the rows whose logits are wanted
  // (and, in a padded decode step, the padding after them).
  void run_layer(std::span<const BatchEntry> batch, int32_t layer);

  kernels::Backend& backend_;
  std::unique_ptr<GgufFile> file_;
  LlamaConfig config_;
  LlamaTensors tensors_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_;
  std::string chat_error_;
  std::vector<Layer> layers_;
  std::unique_ptr<kernels::Weight> token_embd_;
  std::unique_ptr<kernels::Weight> output_;  // null when tied: token_embd_ serves
  kernels::Buffer output_norm_;
  kernels::Buffer rope_freqs_;  // Llama-3.1's RoPE frequency factors; empty when none
  int64_t weight_file_bytes_ = 0;
  bool round_probabilities_f16_ = true;
  kernels::DType kv_type_ = kernels::DType::kF16;

  // Activation scratch, reused across calls (the engine thread owns the model).
  // Activations are backend memory; the bookkeeping is host memory.
  struct Scratch {
    kernels::Buffer x, x_next, h, qkv, attn, tmp, gate_up, ffn, logits;
    std::vector<int32_t> positions;  // of the packed rows
    std::vector<int64_t> out_rows;
    // Per output row: its entry and token, and its row in forward's `logits` (-1: sink only, or
    // returned as candidates: then out_pairs is its first pair in `candidates`, else -1).
    std::vector<int32_t> out_entry, out_token;
    std::vector<int64_t> out_dest, out_pairs;
    std::vector<int32_t> pair_rows;       // output_candidates: the rows topk_rows reduces
    std::vector<kernels::Ranked> ranked;  // and what it returns
    // Per entry: its [begin, end) layers and its first packed row (-1: not packed).
    std::vector<int32_t> layer_begin, layer_end;
    std::vector<int64_t> first_row;
    // The packed entries (indices into the batch) and their attention sequences.
    std::vector<size_t> packed;
    std::vector<kernels::AttentionSeq> seqs;
    int64_t num_rows = 0;
    int64_t padded_rows = 0;          // a padded decode step's rows (0: not one)
    std::vector<int32_t> decode_ids;  // its token ids, padded
  } scratch_;
};

}  // namespace lightserve::model
