#include "scheduler/step_composer.h"

#include <algorithm>

#include "base/check.h"

namespace lightserve::scheduler {

StepComposer::StepComposer(int32_t num_layers, int64_t budget_token_layers, bool layered_prefill)
    : num_layers_(num_layers), budget_(budget_token_layers), layered_prefill_(layered_prefill) {
  LS_CHECK(num_layers_ >= 1) << "num_layers " << num_layers_;
  LS_CHECK(budget_ >= num_layers_) << "budget " << budget_ << " < one decode token";
}

StepPlan StepComposer::compose(std::span<const ComposerRequest> running) const {
  StepPlan plan;
  int64_t left = budget_;
  for (const ComposerRequest& r : running) {
    if (!r.decoding) continue;
    if (r.held) {
      ++plan.num_held;
      continue;
    }
    if (left < num_layers_) continue;
    plan.work.push_back({r.id, true, 1, 0, num_layers_});
    left -= num_layers_;
    ++plan.num_decodes;
  }
  for (const ComposerRequest& r : running) {
    if (r.decoding) continue;
    if (r.held) {
      ++plan.num_held;
      continue;
    }
    LS_CHECK(r.num_prefill_tokens >= 1 && r.prefill_layers_done >= 0 &&
             r.prefill_layers_done < num_layers_)
        << "request " << r.id << ": prefill of " << r.num_prefill_tokens << " tokens, "
        << r.prefill_layers_done << " layers done";
    const int64_t affordable = left / r.num_prefill_tokens;
    const int32_t layers =
        static_cast<int32_t>(std::min<int64_t>(affordable, num_layers_ - r.prefill_layers_done));
    if (layers == 0) continue;
    if (!layered_prefill_ && layers < num_layers_ - r.prefill_layers_done) continue;
    plan.work.push_back(
        {r.id, false, r.num_prefill_tokens, r.prefill_layers_done, r.prefill_layers_done + layers});
    left -= static_cast<int64_t>(layers) * r.num_prefill_tokens;
    ++plan.num_prefills;
  }
  plan.token_layers = budget_ - left;
  return plan;
}

}  // namespace lightserve::scheduler
