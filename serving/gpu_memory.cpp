#include "serving/gpu_memory.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "base/units.h"

namespace lightserve::serving {
namespace {

constexpr int64_t kReserveBytes = 256ll << 20;

std::string gib(int64_t bytes) {
  return human_bytes(static_cast<double>(bytes));
}

std::string fraction(double f) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", f);
  return buf;
}

}  // namespace

std::string GpuMemoryPlan::describe() const {
  const GpuMemoryInputs& in = inputs;
  std::string out = "gpu memory: " + fraction(in.utilization) + " of " + gib(in.total_bytes);
  out.append(" = ").append(gib(allowed_bytes));
  out.append(": weights ").append(gib(in.weight_bytes));
  out.append(", activation peak ").append(gib(in.activation_peak_bytes));
  out.append(", margin ").append(gib(in.margin_bytes));
  out.append(" -> KV arena ").append(gib(kv_budget_bytes));
  out.append(" (").append(gib(in.free_bytes)).append(" free before it)");
  return out;
}

Result<GpuMemoryPlan> plan_gpu_memory(const GpuMemoryInputs& in) {
  const std::string key = "engine.gpu_memory_utilization: ";
  if (!(in.utilization > 0 && in.utilization <= 1)) {
    return Error{key + "must be in (0, 1], got " + fraction(in.utilization)};
  }
  if (in.total_bytes <= 0 || in.free_bytes < 0 || in.weight_bytes < 0 ||
      in.activation_peak_bytes < 0 || in.margin_bytes < 0) {
    return Error{key + "the device reported no usable memory sizes"};
  }
  GpuMemoryPlan plan;
  plan.inputs = in;
  plan.allowed_bytes =
      static_cast<int64_t>(std::floor(in.utilization * static_cast<double>(in.total_bytes)));
  const int64_t others = in.weight_bytes + in.activation_peak_bytes + in.margin_bytes;
  plan.kv_budget_bytes = plan.allowed_bytes - others;
  if (plan.kv_budget_bytes <= 0) {
    const double needed = static_cast<double>(others) / static_cast<double>(in.total_bytes);
    std::string why = key + fraction(in.utilization) + " of " + gib(in.total_bytes) + " is " +
                      gib(plan.allowed_bytes) + ", and the weights (" + gib(in.weight_bytes) +
                      "), the activation peak (" + gib(in.activation_peak_bytes) +
                      ") and the margin (" + gib(in.margin_bytes) +
                      ") leave nothing for the KV cache; ";
    why.append(needed < 1 ? "it must be above " + fraction(needed)
                          : "the model does not fit this GPU");
    return Error{why};
  }
  // The arena comes out of what is free now, and the margin must stay free after it.
  const int64_t fits = in.free_bytes - in.margin_bytes;
  if (plan.kv_budget_bytes > fits) {
    // Rounded down to the printed precision, so that the F it names does fit.
    const double largest =
        std::floor(1000.0 * static_cast<double>(std::max<int64_t>(0, fits) + others) /
                   static_cast<double>(in.total_bytes)) /
        1000.0;
    return Error{key + "a KV arena of " + gib(plan.kv_budget_bytes) + " does not fit: only " +
                 gib(in.free_bytes) + " of " + gib(in.total_bytes) +
                 " is free (other processes or contexts hold the rest) and " +
                 gib(in.margin_bytes) + " must stay free; at most " + fraction(largest) +
                 " fits now"};
  }
  return plan;
}

int64_t gpu_memory_margin(const model::LlamaConfig& config, int64_t context_tokens) {
  const int64_t kv_row = static_cast<int64_t>(config.num_kv_heads) * config.head_dim;
  const int64_t hidden = context_tokens * config.hidden_dim * 4;  // parked f32 hidden states
  const int64_t layer_kv = context_tokens * kv_row * 2 * 2;       // one layer's K and V, 2 bytes
  const int64_t lse = context_tokens * config.num_heads * 4;
  return hidden + layer_kv + lse + kReserveBytes;
}

Result<GpuMemoryPlan> size_kv_from_gpu(model::LlamaModel& model, double utilization,
                                       int64_t free_before_load, int32_t prefill_tokens,
                                       int32_t max_running, int64_t context_tokens) {
  kernels::Backend& backend = model.backend();
  int64_t free_after_load = 0, total = 0;
  if (!backend.memory_info(&free_after_load, &total)) {
    return Error{"engine.gpu_memory_utilization: needs a GPU backend (model.device cuda); " +
                 backend.description() + " has no device memory to size"};
  }
  const model::LlamaConfig& c = model.config();
  prefill_tokens = std::max(1, std::min<int32_t>(prefill_tokens, c.context_length));
  const int32_t decodes = std::max(0, std::min(max_running, 256) - 1);
  {
    // The largest step: one prefill chunk and a decode row for every other running request,
    // every layer, logits for each sequence. Token ids are arbitrary valid ids.
    std::vector<std::unique_ptr<model::SequenceCache>> caches;
    std::vector<model::BatchEntry> batch;
    std::vector<int32_t> prompt(static_cast<size_t>(prefill_tokens));
    for (size_t i = 0; i < prompt.size(); ++i) {
      prompt[i] = static_cast<int32_t>(i % static_cast<size_t>(c.vocab_size));
    }
    const int32_t one_token = 0;
    caches.push_back(std::make_unique<model::SequenceCache>(c, prefill_tokens));
    batch.push_back({caches.back().get(), prompt, false});
    for (int32_t i = 0; i < decodes; ++i) {
      caches.push_back(std::make_unique<model::SequenceCache>(c, 1));
      batch.push_back({caches.back().get(), {&one_token, 1}, false});
    }
    std::vector<float> logits;
    if (Status s = model.forward(batch, logits); !s) {
      return Error{"engine.gpu_memory_utilization: the profiling forward failed: " + s.message()};
    }
  }  // the profiling caches are freed here; the model's activation scratch stays allocated
  int64_t free_after_profile = 0;
  backend.memory_info(&free_after_profile, &total);
  GpuMemoryInputs in;
  in.utilization = utilization;
  in.total_bytes = total;
  in.free_bytes = free_after_profile;
  in.weight_bytes = std::max<int64_t>(0, free_before_load - free_after_load);
  in.activation_peak_bytes = std::max<int64_t>(0, free_after_load - free_after_profile);
  in.margin_bytes = gpu_memory_margin(c, context_tokens);
  return plan_gpu_memory(in);
}

}  // namespace lightserve::serving
