// The engine: continuous batching over one KV arena, with one owner (docs/design.md §1, §6;
// docs/design.md §11 habits 4–6).
//
// Threads. add(), abort() and stop() are thread-safe: they validate and post commands. Everything
// else — the command queue's consumer, the requests, the KvManager, the executor — belongs to the
// one thread that calls step() (tests call it directly: deterministic, no thread) or run()
// (serving). Events reach readers through each request's EventStream.
//
// One step():
//   1. drain commands: adds join the waiting queue; aborts finish at once and give their KV
//      back in this step;
//   2. capacity stage (CapacityScheduler): preempt / grow / admit, committed to the KvManager;
//   3. budget stage (StepComposer): decodes first, then prefill layers, within the budget;
//   4. the executor runs the step and returns logits (or, for a request whose sampler reads no
//      more of the row, only its best few candidates: Executor::max_candidates);
//   5. sample (sampling::Sampler), apply stop rules, emit events, release finished requests;
//   6. assert the step invariants (LS_CHECK): budget respected, every running request holds
//      enough KV, each request in exactly one state list, KvManager counts match the requests.
//
// Sampling lives here, with the request, not in the executor: the sampler's RNG state (and the
// token history penalties will need) then survive a preemption, so the same seed gives the same
// output whether or not the request was recomputed, and the executor stays a pure
// tokens-to-logits function. The cost is a link dependency on model/ for sampler.cpp only.
//
// Refusals happen in add(), on the caller's thread, before anything is queued: invalid params
// (kInvalidArgument), prompt + max_tokens over the context or over what the empty arena holds
// (kOutOfRange, naming both lengths), a full waiting queue (kResourceExhausted), a stopped
// engine (kUnavailable).
//
// The engine must be the KvManager's only client (its counts are checked against the requests),
// and the manager, executor, detokenizer and clock must outlive it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "base/status.h"
#include "memory/kv_manager.h"
#include "scheduler/capacity_scheduler.h"
#include "scheduler/clock.h"
#include "scheduler/detokenizer.h"
#include "scheduler/events.h"
#include "scheduler/executor.h"
#include "scheduler/request.h"
#include "scheduler/step_composer.h"

namespace lightserve::scheduler {

struct SchedulerConfig {
  int32_t max_context_tokens = 0;  // the model's context: prompt + max_tokens may not exceed it
  int32_t max_running = 64;        // requests holding KV at once (batch slots)
  int32_t max_waiting = 256;       // waiting-queue bound; beyond it add() refuses at once
  // Per-step work in token-layers. Must be >= min_budget(): every decode plus one layer (all
  // layers without layered_prefill) of the longest possible prefill. 0 means min_budget().
  int64_t step_budget_token_layers = 0;
  AdmissionPolicy policy = AdmissionPolicy::kReserve;
  int32_t growth_tokens = 16;  // optimistic: room added beyond what a step needs
  // Prefills advance a few layers per step (true), or run whole in one step (false: for an
  // executor that cannot stop a forward pass after k layers yet; see executor.h).
  bool layered_prefill = true;
  bool priority_scheduling = false;    // order by RequestParams::priority, then arrival
  std::vector<int32_t> eos_token_ids;  // end-of-generation ids (ignored under ignore_eos)
  // Backpressure: a decoding request whose EventStream holds this many unread events sits out
  // decode steps (keeping its KV) until its reader catches up, so a slow client bounds what is
  // buffered for it instead of the engine generating into memory. 0 = never hold (tests that
  // read events only at the end).
  int32_t max_unread_events = 0;
  bool audit_kv_every_step = false;  // also KvManager::check_invariants (O(blocks)): tests
  // add_group: the samples of one prompt share one prefill (forks, docs/design.md §6). false:
  // every sample prefills the prompt itself (the comparison in bench/shared_prefill).
  bool share_group_prefill = true;
  // Ask the executor for only a row's best candidates where the request's sampler reads no more
  // (sampling::Sampler::candidates_needed; no logprobs, prompt logprobs or forks that need more),
  // up to Executor::max_candidates(): on a GPU the step then brings back k (id, logit) pairs per
  // row instead of vocab_size floats. The tokens are the same either way; false: whole rows
  // always (`--device-sampling off`, the A/B).
  bool candidate_sampling = true;

  int64_t min_budget(int32_t num_layers) const;
  // A serving default in the manner of vLLM's max_num_batched_tokens: a step holds up to
  // kDefaultStepTokens tokens through every layer.
  static constexpr int64_t kDefaultStepTokens = 2048;
  // step_budget_token_layers when set (> 0), else kDefaultStepTokens · num_layers; never below
  // min_budget().
  int64_t budget_or_default(int32_t num_layers) const;
  // Errors name the field. num_layers comes from the KV layout.
  Status validate(int32_t num_layers) const;
};

struct AddResult {
  RequestId id = 0;                     // 0 when refused
  std::shared_ptr<EventStream> events;  // null when refused
  std::optional<EngineError> error;     // set when refused
  bool ok() const { return !error.has_value(); }
};

struct AddGroupResult {
  std::vector<AddResult> members;    // one per params, in order; empty when refused
  std::optional<EngineError> error;  // set when refused (then none was taken)
  bool ok() const { return !error.has_value(); }
};

// What one step did (for tests, logs and metrics).
struct StepSummary {
  bool ran = false;  // the executor ran (false: nothing to compute)
  int64_t token_layers = 0;
  int32_t num_decodes = 0;
  int32_t num_prefills = 0;
  int32_t num_admitted = 0;
  int32_t num_preempted = 0;
  int32_t num_finished = 0;  // finished or aborted in this step, commands included
  int32_t num_held = 0;      // running requests held back this step (max_unread_events)
  // The executor failed this step (an error status or an exception such as std::bad_alloc or a
  // device error): the step's requests finished with kInternal, every other request goes on.
  bool executor_failed = false;
};

struct EngineStats {
  int32_t num_waiting = 0;
  int32_t num_running = 0;
  int32_t num_held = 0;  // of the running, held back in the last step: their readers lag
  int64_t num_steps = 0;
  int64_t num_preemptions_total = 0;
  int64_t num_admission_rejections_total = 0;
  int64_t num_prompt_tokens_total = 0;
  // Tokens run through a prefill's last layer (recomputes included; a fork computes none): what
  // the prefills cost, against num_prompt_tokens_total, which counts every request's prompt.
  int64_t num_prefill_tokens_total = 0;
  int64_t num_forks_total = 0;  // samples started from a sibling's prefill (add_group)
  int64_t num_generated_tokens_total = 0;
  // Logits rows the executor returned as candidates, not whole (candidate_sampling), and whole.
  int64_t num_candidate_rows_total = 0;
  int64_t num_whole_rows_total = 0;
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(SchedulerConfig config, memory::KvManager& kv,
                                                Executor& executor, const Detokenizer& detokenizer,
                                                const Clock& clock);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  // Aborts what is left (each stream gets its kAbort finish) and gives all KV back. Call it on
  // the engine thread, after run() has returned.
  ~Engine();

  // Thread-safe.
  [[nodiscard]] AddResult add(RequestParams params);
  // Adds the n >= 1 samples of one prompt (OpenAI's n) at once: all of them, or none (the error of
  // the first refused; the queue must hold all n). With share_group_prefill, every member whose
  // prompt and footprint equal the first's is a fork of the first (Request::fork_of): it waits
  // until the first has run its prefill, then copies its KV and layer map (Executor::fork) and
  // samples its own first token, with its own sampler, from the first's last-token logits, so the
  // prompt is prefilled once and each member gives exactly what it would give alone. A fork whose
  // parent ends, is preempted or fails before that, or that finds no room then, prefills itself.
  [[nodiscard]] AddGroupResult add_group(std::vector<RequestParams> group);
  void abort(RequestId id);  // unknown or finished ids are ignored
  void stop();               // run() returns after its current step; later adds are refused

  // Called on the engine thread with every event as it is pushed to its request's stream (metrics
  // count tokens and finishes here, whether or not a client still reads the stream). Set it
  // before the first step(); it must not block or call back into the engine.
  void set_observer(std::function<void(const RequestEvent&)> observer) {
    observer_ = std::move(observer);
  }
  // Called by run() on the engine thread after every step (gauges read stats() here).
  void set_step_listener(std::function<void(const StepSummary&)> listener) {
    step_listener_ = std::move(listener);
  }

  // Engine thread only.
  StepSummary step();
  void run();
  bool has_work() const;  // commands pending, or requests waiting or running

  // Engine thread only: observation for tests and metrics.
  std::optional<RequestState> state_of(RequestId id) const;
  // KV tokens computed and prefill layers done (catch-up model), nullopt for unknown ids.
  std::optional<std::pair<int32_t, int32_t>> progress_of(RequestId id) const;
  const StepPlan& last_plan() const { return last_plan_; }
  EngineStats stats() const;
  const SchedulerConfig& config() const { return config_; }

 private:
  struct Command {
    enum class Kind : uint8_t { kAdd, kAbort };
    Kind kind = Kind::kAdd;
    RequestId id = 0;
    std::unique_ptr<Request> request;  // kAdd
  };

  Engine(SchedulerConfig config, memory::KvManager& kv, Executor& executor,
         const Detokenizer& detokenizer, const Clock& clock);

  std::optional<EngineError> validate_params(const RequestParams& params) const;
  std::unique_ptr<Request> make_request(RequestParams params);
  void process_commands(StepSummary& summary);
  bool senior(const Request& a, const Request& b) const;
  void insert_sorted(std::vector<Request*>& list, Request* request) const;
  static void erase_from(std::vector<Request*>& list, const Request* request);

  // engine_step.cpp
  void run_capacity_stage(double now, StepSummary& summary);
  StepPlan run_budget_stage() const;
  // How many of r's next row's best candidates the step may return instead of the row (0: the
  // whole row): what r's sampler, and those of the forks that will sample from r's row, read.
  int32_t candidates_needed(const Request& r) const;
  void apply_results(const StepPlan& plan, const StepBatch& batch, double now,
                     StepSummary& summary);
  void on_token(Request& r, int32_t token, std::optional<TokenLogprobs> logprobs, double now,
                StepSummary& summary);
  // Pushes `event` to r's stream after showing it to the observer.
  void emit(Request& r, RequestEvent event);
  std::string final_text(Request& r);
  void preempt(Request& r);
  // r has just completed its first prefill with `row`: its forks copy it and sample.
  void start_forks(Request& r, const StepOutput::Row& row, double now, StepSummary& summary);
  void detach_forks(Request& r);  // r will not complete a prefill for its forks
  void sample_and_emit(Request& r, const StepOutput::Row& row, double now, StepSummary& summary);
  void release_kv(Request& r);
  // Ends the request: releases its KV and executor state, pushes the kFinished event, forgets it.
  void finish(Request& r, FinishReason reason, std::string text, int32_t stop_token,
              std::optional<EngineError> error, double now, StepSummary& summary);
  void check_step_invariants(const StepPlan* plan) const;

  const SchedulerConfig config_;
  memory::KvManager& kv_;
  Executor& executor_;
  const Detokenizer& detokenizer_;
  const Clock& clock_;
  // Immutable copies for add() on other threads.
  const memory::KvLayout layout_;
  const int32_t num_total_pages_;
  const int32_t vocab_size_;
  const int32_t max_candidates_;  // what an entry may ask (0: whole rows only)
  const CapacityScheduler capacity_;
  const StepComposer composer_;

  // Shared with other threads.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Command> commands_;  // guarded by mutex_
  bool stop_requested_ = false;    // guarded by mutex_
  std::atomic<RequestId> next_id_{1};
  std::atomic<int32_t> num_queued_{0};  // pending adds + waiting requests: the queue bound
  std::atomic<int64_t> num_rejections_{0};

  // Engine thread only.
  std::map<RequestId, std::unique_ptr<Request>> requests_;  // every non-terminal request
  std::vector<Request*> waiting_;                           // admission order
  std::vector<Request*> running_;                           // most senior first
  std::function<void(const RequestEvent&)> observer_;
  std::function<void(const StepSummary&)> step_listener_;
  StepPlan last_plan_;
  StepOutput output_;
  int64_t num_steps_ = 0;
  int64_t num_preemptions_ = 0;
  int64_t num_prompt_tokens_ = 0;
  int64_t num_prefill_tokens_ = 0;
  int64_t num_forks_ = 0;
  int64_t num_generated_tokens_ = 0;
  int64_t num_candidate_rows_ = 0;
  int64_t num_whole_rows_ = 0;
};

}  // namespace lightserve::scheduler
