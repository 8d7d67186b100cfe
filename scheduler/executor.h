// The narrow interface between the engine and the forward pass (docs/design.md §1, §2;
// docs/design.md §11 habit 5). The scheduler holds integer ids only; an executor runs the model
// over the KV ids it is handed. Tests use tests/scheduler/fake_executor.h; the real adapter (over
// model::LlamaModel and model::HybridSequence) is executor::ModelExecutor (executor/).
//
// The catch-up contract, per request:
//  * A request's life on the executor starts with an entry with begins_sequence = true: a prefill
//    of `tokens` (the prompt, or after a preemption the prompt plus every token generated so far:
//    recompute) from position 0. The executor creates its per-request state then (e.g. a
//    HybridSequence over `kv`).
//  * A prefill advances by layers: each entry names the layer range [layer_begin, layer_end) to
//    run over all of `tokens`; the ranges of successive steps are contiguous and start at 0, so
//    the executor keeps the hidden states of the unfinished prefill between steps (T × d floats).
//    The entry whose layer_end == num_layers completes the prefill and asks for logits of the
//    last token. LightTransfer needs whole-prompt layers (the lazy ratio of a layer is computed
//    over the whole prompt), which is why a prefill is split by layers, never by tokens.
//    The real executor (executor/model_executor.h) runs these ranges through
//    model::LlamaModel::forward, which parks an unfinished prompt's hidden states in its sequence
//    (SequenceKv::pending()); with SchedulerConfig::layered_prefill = false every prefill entry is
//    whole (layer_begin = 0, layer_end = num_layers).
//  * A decode entry feeds one token (the last one sampled) at `position` through all layers and
//    asks for its logits.
//  * fork(parent, child, kv): the shared prefill of n > 1 samples (Engine::add_group). Called
//    right after the step whose entry ran the parent's prefill's last layer, before any decode of
//    the parent: the child's life on the executor starts as a copy of the parent's (every computed
//    token's KV in every lane, copied into the child's own fresh allocation of the same footprint
//    and at least the parent's capacity; the parent's layer map, so the child never re-decides its
//    lazy layers). The child then goes on with decode entries as if it had prefilled the same
//    tokens itself (it gets no begins_sequence entry). On an error the executor holds no state for
//    the child and the engine lets it prefill on its own.
//  * release(id) ends the executor's per-request state: on finish, abort, preemption and error,
//    always before the engine gives the request's KV back, so no executor state outlives the KV.
//  * What comes back per needs_logits entry (StepOutput): its whole logits row, or, when the
//    entry's num_candidates = k > 0 (the engine asks only up to max_candidates()), possibly just
//    the row's k best candidates (id, logit) in sampling::ranks_before order: all the request's
//    sampler reads of that row (sampling::Sampler::candidates_needed). A GPU executor then sends
//    back k pairs instead of vocab_size floats. The whole row is always a correct answer.
//
// Threading: every call comes from the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "memory/kv_allocation.h"
#include "sampling/sampler.h"
#include "scheduler/events.h"

namespace lightserve::scheduler {

struct ExecutorEntry {
  RequestId request_id = 0;
  // The request's KV, owned by the engine; valid and at the same address from begins_sequence
  // until release(request_id). The executor reads its page tables and fills its
  // layer map during prefill. Its token_capacity covers position + tokens.size().
  memory::KvAllocation* kv = nullptr;
  std::span<const int32_t> tokens;  // prefill: all tokens to prefill; decode: exactly one
  int32_t position = 0;             // tokens already in the KV before this entry (0 for prefill)
  int32_t layer_begin = 0;          // layers of this step: [layer_begin, layer_end)
  int32_t layer_end = 0;
  bool begins_sequence = false;  // first entry of this request since admission
  bool needs_logits = false;     // layer_end == num_layers: logits of the last token
  // A prefill entry with needs_logits may ask for the prompt's log-probabilities: the executor
  // then fills *prompt_logprobs with tokens.size() - 1 entries (token t given tokens 0..t-1, for
  // t = 1 ..), each with prompt_logprobs_top alternatives (token_logprobs), reducing the logits
  // row by row as they are computed (never all of them at once).
  std::vector<TokenLogprobs>* prompt_logprobs = nullptr;
  int32_t prompt_logprobs_top = 0;
  // With needs_logits: > 0 when the engine reads no more of the row than its best num_candidates
  // candidates (≤ Executor::max_candidates(); never with prompt_logprobs); 0: the whole row.
  int32_t num_candidates = 0;

  bool is_prefill() const { return position == 0; }
  // The step's cost in the budget's unit: tokens × layers.
  int64_t token_layers() const {
    return static_cast<int64_t>(tokens.size()) * (layer_end - layer_begin);
  }
};

struct StepBatch {
  std::vector<ExecutorEntry> entries;  // decodes first, then prefills (StepComposer's order)
};

// A step's results: one row per entry with needs_logits, in entry order, each either the whole
// logits row or (for an entry that asked num_candidates = k) its k best candidates.
struct StepOutput {
  struct Row {
    bool whole = true;   // logits[offset, offset + count): the row's count = vocab_size floats
    int64_t offset = 0;  // else candidates[offset, offset + count), count = the k asked
    int32_t count = 0;
  };
  std::vector<float> logits;
  std::vector<sampling::Candidate> candidates;
  std::vector<Row> rows;

  void clear() {
    logits.clear();
    candidates.clear();
    rows.clear();
  }
  // Appends the next row, whole or as candidates.
  void add_logits(std::span<const float> row) {
    rows.push_back({true, static_cast<int64_t>(logits.size()), static_cast<int32_t>(row.size())});
    logits.insert(logits.end(), row.begin(), row.end());
  }
  void add_candidates(std::span<const sampling::Candidate> best) {
    rows.push_back(
        {false, static_cast<int64_t>(candidates.size()), static_cast<int32_t>(best.size())});
    candidates.insert(candidates.end(), best.begin(), best.end());
  }
  std::span<const float> logits_of(const Row& row) const {
    return std::span<const float>(logits).subspan(static_cast<size_t>(row.offset),
                                                  static_cast<size_t>(row.count));
  }
  std::span<const sampling::Candidate> candidates_of(const Row& row) const {
    return std::span<const sampling::Candidate>(candidates)
        .subspan(static_cast<size_t>(row.offset), static_cast<size_t>(row.count));
  }
};

class Executor {
 public:
  virtual ~Executor() = default;

  virtual int32_t vocab_size() const = 0;
  // The most candidates an entry may ask for (ExecutorEntry::num_candidates); 0: whole rows only.
  virtual int32_t max_candidates() const { return 0; }

  // Runs one step into `output` (cleared first): a row per entry with needs_logits, in entry
  // order (see StepOutput and the contract above). On an error the engine finishes every request
  // of the batch with kError (and releases them); the executor must leave other requests' state
  // intact.
  virtual Status execute(const StepBatch& batch, StepOutput& output) = 0;

  // Starts `child` as a copy of `parent` (see fork above). `parent` has just completed its
  // prefill; `child_kv` is the child's, valid until release(child).
  virtual Status fork(RequestId parent, RequestId child, memory::KvAllocation& child_kv) = 0;

  // Drops the per-request state (a no-op for an id it does not know).
  virtual void release(RequestId request_id) = 0;
};

}  // namespace lightserve::scheduler
