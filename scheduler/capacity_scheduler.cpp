#include "scheduler/capacity_scheduler.h"

#include <algorithm>

#include "base/check.h"

namespace lightserve::scheduler {

const char* to_string(AdmissionPolicy policy) {
  return policy == AdmissionPolicy::kReserve ? "reserve" : "optimistic";
}

CapacityScheduler::CapacityScheduler(const memory::KvLayout& layout, AdmissionPolicy policy,
                                     int32_t max_running, int32_t growth_tokens)
    : layout_(layout), policy_(policy), max_running_(max_running), growth_tokens_(growth_tokens) {
  LS_CHECK(layout_.validate().ok()) << layout_.validate().message();
  LS_CHECK(max_running_ >= 1) << "max_running " << max_running_;
  LS_CHECK(growth_tokens_ >= 0) << "growth_tokens " << growth_tokens_;
}

int64_t CapacityScheduler::admission_capacity(const CapacityCandidate& candidate) const {
  if (policy_ == AdmissionPolicy::kReserve) return candidate.max_total_tokens;
  return std::min(candidate.max_total_tokens, candidate.tokens_needed + growth_tokens_);
}

CapacityDecision CapacityScheduler::schedule(const CapacityInput& input) const {
  CapacityDecision decision;
  int64_t free_pages = input.num_free_pages;

  // Running requests, most senior first, get the room this step needs. Victims come from the
  // young end; `alive` is the count of running requests not preempted (a prefix of `running`).
  size_t alive = input.running.size();
  for (size_t i = 0; i < alive; ++i) {
    const CapacityCandidate& r = input.running[i];
    if (r.tokens_needed <= r.token_capacity) continue;
    LS_CHECK(policy_ == AdmissionPolicy::kOptimistic)
        << "request " << r.id << " needs " << r.tokens_needed << " tokens but reserved only "
        << r.token_capacity << " under the reserve policy";
    const int64_t target = std::min(r.max_total_tokens, r.tokens_needed + growth_tokens_);
    LS_CHECK(target >= r.tokens_needed) << "request " << r.id << " outgrew prompt + max_tokens";
    const int64_t extra = pages_for(target, r.footprint) - pages_for(r.token_capacity, r.footprint);
    bool preempted_self = false;
    while (extra > free_pages) {
      const CapacityCandidate& victim = input.running[alive - 1];
      --alive;
      decision.preempt.push_back(victim.id);
      free_pages += pages_for(victim.token_capacity, victim.footprint);
      if (alive == i) {  // the victim was the request itself
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) break;
    free_pages -= extra;
    decision.grow.push_back({r.id, target});
  }

  if (decision.preempt.empty()) {
    int64_t num_running = static_cast<int64_t>(alive);
    for (const CapacityCandidate& w : input.waiting) {
      if (num_running >= max_running_) break;
      const int64_t capacity = admission_capacity(w);
      const int64_t pages = pages_for(capacity, w.footprint);
      if (pages > free_pages) break;  // strict order: no overtaking
      free_pages -= pages;
      ++num_running;
      decision.admit.push_back({w.id, capacity});
    }
  }
  decision.num_free_pages = static_cast<int32_t>(free_pages);
  return decision;
}

}  // namespace lightserve::scheduler
