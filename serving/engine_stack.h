// The one assembly of an engine over a loaded model (docs/design.md §1, §2): the KV arena carved
// from a byte budget, the executor and detokenizer over the model, and the scheduler's Engine
// with its configuration. ServingCore runs one on its engine thread; `lightserve bench` builds
// one per run and steps it on its own thread, so both measure and serve the same assembly.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "executor/fault_injection.h"
#include "executor/model_executor.h"
#include "model/kv_arena.h"
#include "model/lighttransfer.h"
#include "model/llama_model.h"
#include "scheduler/clock.h"
#include "scheduler/engine.h"

namespace lightserve::serving {

struct EngineStackOptions {
  int64_t kv_budget_bytes = 0;
  int32_t context_tokens = 0;  // prompt + output per request
  int32_t max_running = 64;
  int32_t max_waiting = 256;
  int32_t max_unread_events = 0;   // SchedulerConfig::max_unread_events (0: never hold)
  std::string policy = "reserve";  // reserve | optimistic
  bool priority_scheduling = false;
  // A long prompt advances a few layers per step, so the decodes of others wait one step at
  // most; false runs every prefill through all layers in one step.
  bool layered_prefill = true;
  // The samples of one prompt (Engine::add_group) share its prefill; false: each prefills it.
  bool share_group_prefill = true;
  // SchedulerConfig::candidate_sampling (`--device-sampling`): rows whose sampler reads only
  // their best few tokens come back as those tokens (top-k on the device), not whole.
  bool candidate_sampling = true;
  int64_t step_budget_token_layers = 0;  // 0: SchedulerConfig::budget_or_default
  // Faults to inject at the executor boundary (the reliability tests); none when unset.
  std::optional<executor::FaultPlan> faults;
};

class EngineStack {
 public:
  // `model` and `clock` must outlive the stack. Errors name the setting (engine.kv_budget: ...).
  static Result<std::unique_ptr<EngineStack>> create(model::LlamaModel& model,
                                                     const model::LightTransferSettings& settings,
                                                     const EngineStackOptions& options,
                                                     const scheduler::Clock& clock);
  // The engine goes first: it aborts what is left and releases its KV into the arena.
  ~EngineStack();

  scheduler::Engine& engine() { return *engine_; }
  const scheduler::Engine& engine() const { return *engine_; }
  model::KvArena& arena() { return *arena_; }
  const model::KvArena& arena() const { return *arena_; }
  executor::ModelExecutor& executor() { return *executor_; }
  // Drops the engine now (idempotent): its remaining requests get their kAbort finish.
  void reset_engine() { engine_.reset(); }
  bool has_engine() const { return engine_ != nullptr; }

 private:
  EngineStack() = default;
  std::unique_ptr<model::KvArena> arena_;
  std::unique_ptr<executor::ModelExecutor> executor_;
  std::unique_ptr<executor::FaultInjectingExecutor> faulty_;  // over executor_, when faults are set
  std::unique_ptr<executor::ModelDetokenizer> detokenizer_;
  std::unique_ptr<scheduler::Engine> engine_;
};

}  // namespace lightserve::serving
