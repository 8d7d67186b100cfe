// Capacity stage (docs/design.md §6 step 1; docs/design.md §11 habit 4): which requests hold KV
// this step.
//
// A small const object: it sees counts only (free pages, each request's footprint, tokens and
// capacity) and returns a decision with no side effects. The engine then commits it
// in order (preemptions release first, then grows, then admissions), re-planning each through
// KvManager::plan_* and LS_CHECKing that the plan exists: the arithmetic here is the manager's
// own (KvLayout::pages_for), so a plan can only be missing on a bookkeeping bug.
//
// Policies:
//  * kReserve: admit with prompt + max_tokens reserved up front; a running request never needs
//    to grow, so nothing is ever preempted.
//  * kOptimistic: admit with room for the tokens to prefill + growth_tokens (capped at prompt +
//    max_tokens); a running request that needs more room grows by growth_tokens; when the pages
//    are not there, the youngest running request is preempted (by recompute: its KV is freed in
//    this same step) until they are, or until the request itself is the youngest, in which case
//    it is the one preempted. The oldest request therefore always makes progress (it alone fits:
//    Engine::add refuses what the empty arena cannot hold), which bounds every wait.
//
// Admission is strict order over the waiting list the engine passes (FCFS, or priority then
// FCFS): it stops at the first request that does not fit, so a large request is never starved by
// smaller ones behind it. A step that preempted admits nothing.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "memory/kv_layout.h"
#include "scheduler/events.h"

namespace lightserve::scheduler {

enum class AdmissionPolicy : uint8_t { kReserve, kOptimistic };

const char* to_string(AdmissionPolicy policy);

// A request as the capacity stage sees it.
struct CapacityCandidate {
  RequestId id = 0;
  memory::Footprint footprint;
  int64_t tokens_needed = 0;     // tokens the KV must hold after this step (waiting: to prefill)
  int64_t token_capacity = 0;    // running: what its allocation holds now; waiting: 0
  int64_t max_total_tokens = 0;  // prompt + max_tokens
};

struct CapacityInput {
  std::span<const CapacityCandidate> running;  // most senior first (the last is the youngest)
  std::span<const CapacityCandidate> waiting;  // in admission order
  int32_t num_free_pages = 0;
};

struct CapacityDecision {
  struct Grow {
    RequestId id = 0;
    int64_t token_capacity = 0;  // the new total
  };
  struct Admit {
    RequestId id = 0;
    int64_t token_capacity = 0;
  };
  std::vector<RequestId> preempt;  // in the order chosen (youngest first)
  std::vector<Grow> grow;
  std::vector<Admit> admit;
  int32_t num_free_pages = 0;  // predicted after the whole decision is committed
};

class CapacityScheduler {
 public:
  // Preconditions (LS_CHECK): layout valid, max_running >= 1, growth_tokens >= 0.
  CapacityScheduler(const memory::KvLayout& layout, AdmissionPolicy policy, int32_t max_running,
                    int32_t growth_tokens);

  [[nodiscard]] CapacityDecision schedule(const CapacityInput& input) const;

  // Token capacity an admitted request gets under the policy.
  int64_t admission_capacity(const CapacityCandidate& candidate) const;
  int64_t pages_for(int64_t tokens, memory::Footprint footprint) const {
    return layout_.pages_for(tokens, footprint);
  }

 private:
  memory::KvLayout layout_;
  AdmissionPolicy policy_;
  int32_t max_running_;
  int32_t growth_tokens_;
};

}  // namespace lightserve::scheduler
