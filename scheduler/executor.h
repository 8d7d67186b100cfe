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
//
// Threading: every call comes from the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "memory/kv_allocation.h"
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

  bool is_prefill() const { return position == 0; }
  // The step's cost in the budget's unit: tokens × layers.
  int64_t token_layers() const {
    return static_cast<int64_t>(tokens.size()) * (layer_end - layer_begin);
  }
};

struct StepBatch {
  std::vector<ExecutorEntry> entries;  // decodes first, then prefills (StepComposer's order)
};

class Executor {
 public:
  virtual ~Executor() = default;

  virtual int32_t vocab_size() const = 0;

  // Runs one step. On success `logits` holds vocab_size() floats per entry with needs_logits, in
  // entry order. On an error the engine finishes every request of the batch with kError (and
  // releases them); the executor must leave other requests' state intact.
  virtual Status execute(const StepBatch& batch, std::vector<float>& logits) = 0;

  // Starts `child` as a copy of `parent` (see fork above). `parent` has just completed its
  // prefill; `child_kv` is the child's, valid until release(child).
  virtual Status fork(RequestId parent, RequestId child, memory::KvAllocation& child_kv) = 0;

  // Drops the per-request state (a no-op for an id it does not know).
  virtual void release(RequestId request_id) = 0;
};

}  // namespace lightserve::scheduler
