// The engine's real executor (scheduler/executor.h) over model::LlamaModel, and its detokenizer
// over model::StreamDecoder.
//
// Why here: the scheduler core knows no model beyond the sampler (docs/design.md §2: it reaches the
// forward pass "through a narrow executor interface"), and model/ may not depend on scheduler/.
// The adapter needs both, so it is a layer of its own (executor/, library `executor`), below the
// serving core that wires an engine together.
//
// Each request's KV is a model::HybridSequence attached to the engine's KvAllocation: created on
// the request's begins_sequence entry, dropped by release(id). Every step's entries go through
// one LlamaModel::forward call: decode entries with one token through every layer, prefill
// entries with their whole prompt through the step's layer range. Both SchedulerConfig
// layered_prefill settings work: with layered prefill a prompt's hidden states wait between
// steps in its sequence (HybridSequence::pending(), T × hidden_dim floats, freed when its last
// layer has run), and its LightTransfer selection carries on layer by layer across steps.
// Entries that ask for candidates get them (LlamaModel::forward_candidates: one
// Backend::topk_rows call over those rows), the others their whole rows, in the same forward
// call: one request with logprobs does not make the rest of the batch download their logits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/config.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "model/lighttransfer.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "scheduler/detokenizer.h"
#include "scheduler/executor.h"

namespace lightserve::executor {

class ModelExecutor final : public scheduler::Executor {
 public:
  // `model` and `arena` must outlive the executor; the engine must use arena.manager() as its
  // KvManager. `settings` is the mode hybrid allocations run (full and streaming footprints
  // override it per request).
  ModelExecutor(model::LlamaModel& model, model::KvArena& arena,
                model::LightTransferSettings settings);

  int32_t vocab_size() const override;
  int32_t max_candidates() const override { return kernels::kMaxTopK; }
  Status execute(const scheduler::StepBatch& batch, scheduler::StepOutput& output) override;
  // The child's HybridSequence is HybridSequence::fork of the parent's.
  Status fork(scheduler::RequestId parent, scheduler::RequestId child,
              memory::KvAllocation& child_kv) override;
  void release(scheduler::RequestId request_id) override;

  // Observation (tests, metrics): the live per-request sequences.
  int32_t num_sequences() const { return static_cast<int32_t>(sequences_.size()); }
  const model::HybridSequence* sequence(scheduler::RequestId request_id) const;
  // Forward calls made, and the most entries one of them held.
  int64_t num_forward_calls() const { return num_forward_calls_; }
  // Wall time inside LlamaModel::forward (device work included: it returns with the logits).
  double forward_seconds() const { return forward_seconds_; }
  int32_t max_batch_entries() const { return max_batch_entries_; }
  // Per layer: how many prefills so far ended with that layer lazy, counted in the step that ran
  // a prefill's last layer (the lightserve_lazy_layer_selected_total metric). Engine thread only.
  const std::vector<int64_t>& lazy_layer_counts() const { return lazy_layer_counts_; }

 private:
  model::LlamaModel& model_;
  model::KvArena& arena_;
  model::LightTransferSettings settings_;
  std::unordered_map<scheduler::RequestId, std::unique_ptr<model::HybridSequence>> sequences_;
  std::vector<model::BatchEntry> batch_;  // reused across steps
  std::vector<model::RowSink> sinks_;     // prompt logprobs of this step's entries
  int64_t num_forward_calls_ = 0;
  double forward_seconds_ = 0;
  int32_t max_batch_entries_ = 0;
  std::vector<int64_t> lazy_layer_counts_;
};

// TextStreams over model::StreamDecoder (whole UTF-8 characters only).
class ModelDetokenizer final : public scheduler::Detokenizer {
 public:
  explicit ModelDetokenizer(const model::Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::unique_ptr<scheduler::TextStream> start() const override;

 private:
  const model::Tokenizer& tokenizer_;
};

}  // namespace lightserve::executor
