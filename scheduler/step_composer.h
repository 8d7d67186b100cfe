// Budget stage (docs/design.md §6 step 2; docs/design.md §11 habits 4 and 5): what each running
// request computes this step, within a per-step budget counted in token-layers (T tokens through k
// layers cost T · k).
//
// Every decoding request gets its one token first (cost num_layers each). Prefills then fill the
// rest in seniority order, each taking as many whole layers over its whole prompt as the budget
// left allows (floor(left / T), at most the layers it still needs); a prefill that cannot afford
// one layer waits, and a younger, shorter one may use the room. So a long prompt advances a few
// layers per step and decodes never stall behind it. SchedulerConfig::validate requires
// budget >= max_running · num_layers + max_context_tokens, so the most senior prefill always
// gets at least one layer (no starvation) and every decode always fits.
//
// With layered_prefill = false a prefill is scheduled only whole (all its layers in one step):
// the mode for an executor whose forward pass cannot stop after k layers yet (executor.h); the
// budget must then hold max_running · num_layers + max_context_tokens · num_layers.
//
// A held request (its client has not read what it already generated) gets no decode this step
// and costs nothing; it keeps its KV and decodes again once its reader catches up.
//
// A small const object; compose() has no side effects.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "scheduler/events.h"

namespace lightserve::scheduler {

// A running request as the budget stage sees it.
struct ComposerRequest {
  RequestId id = 0;
  bool decoding = false;
  int32_t num_prefill_tokens = 0;   // prefilling: tokens the prefill covers (T)
  int32_t prefill_layers_done = 0;  // prefilling: layers already run over them
  // Its reader lags (SchedulerConfig::max_unread_events): no work this step. A prefill can be
  // held only when it recomputes a preempted request whose earlier events are still unread.
  bool held = false;
};

struct ScheduledWork {
  RequestId id = 0;
  bool decode = false;
  int32_t num_tokens = 0;  // decode: 1; prefill: T
  int32_t layer_begin = 0;
  int32_t layer_end = 0;

  int64_t token_layers() const {
    return static_cast<int64_t>(num_tokens) * (layer_end - layer_begin);
  }
};

struct StepPlan {
  std::vector<ScheduledWork> work;  // decodes first, then prefills, each in seniority order
  int64_t token_layers = 0;         // sum over work, <= the budget
  int32_t num_decodes = 0;
  int32_t num_prefills = 0;
  int32_t num_held = 0;  // running requests that sit this step out: their readers lag
  bool empty() const { return work.empty(); }
};

class StepComposer {
 public:
  // Preconditions (LS_CHECK): num_layers >= 1, budget_token_layers >= num_layers.
  StepComposer(int32_t num_layers, int64_t budget_token_layers, bool layered_prefill = true);

  // `running`: most senior first.
  [[nodiscard]] StepPlan compose(std::span<const ComposerRequest> running) const;

  int64_t budget_token_layers() const { return budget_; }

 private:
  int32_t num_layers_;
  int64_t budget_;
  bool layered_prefill_;
};

}  // namespace lightserve::scheduler
