// Sizing the KV arena from the GPU's memory (`--gpu-memory-utilization F`, vLLM's meaning: the
// fraction of the GPU's total memory this process may use). After the weights are loaded, a
// profiling forward at the largest step the engine composes (a prefill chunk of the step budget's
// tokens plus a decode row for every other running request) measures the activation peak; the KV
// arena then gets
//
//     F · total − weights − activation peak − margin
//
// where the margin covers what grows outside the arena while serving (one request's prefill
// scratch: its parked hidden states, one layer's whole-prompt K/V and log-sum-exps, §13) plus a
// fixed reserve for library workspaces and fragmentation. plan_gpu_memory is the arithmetic alone
// (unit-tested without a GPU); size_kv_from_gpu measures on the backend and calls it.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/llama_model.h"

namespace lightserve::serving {

struct GpuMemoryInputs {
  double utilization = 0;             // F, in (0, 1]
  int64_t total_bytes = 0;            // the GPU's memory
  int64_t free_bytes = 0;             // free now, after weights and profiling (every process)
  int64_t weight_bytes = 0;           // what loading the weights took
  int64_t activation_peak_bytes = 0;  // what the profiling forward took
  int64_t margin_bytes = 0;           // kept free for what grows outside the arena
};

struct GpuMemoryPlan {
  GpuMemoryInputs inputs;
  int64_t allowed_bytes = 0;    // floor(F · total)
  int64_t kv_budget_bytes = 0;  // the KV arena
  // "gpu memory: 0.90 of 79.1 GiB = 71.2 GiB: weights 15.0 GiB, activations 1.2 GiB, margin
  // 1.3 GiB → KV arena 53.7 GiB (60.2 GiB free)": the start-up line.
  std::string describe() const;
};

// The arena for `in`. Errors (naming engine.gpu_memory_utilization): F outside (0, 1]; nothing
// left for the KV cache after weights, activations and margin (says by how much F would have to
// grow); more than is free now, other processes holding part of the GPU (says the largest F that
// fits).
Result<GpuMemoryPlan> plan_gpu_memory(const GpuMemoryInputs& in);

// The margin for `config` serving requests of up to context_tokens: one prompt's prefill scratch
// (hidden states parked between layers, one layer's K/V in the KV type, its log-sum-exps) and
// 256 MiB of reserve (cuBLAS workspaces, fragmentation).
int64_t gpu_memory_margin(const model::LlamaConfig& config, int64_t context_tokens);

// Measures and plans on `model`'s backend: free_before_load is memory_info()'s free bytes taken
// after the backend was created and before the model was loaded. Runs one profiling forward of
// prefill_tokens (the step budget's tokens, capped at the context) plus max_running − 1 one-token
// sequences, in caches freed before the measurement. Errors: a backend without device memory
// (the CPU), the plan's errors.
Result<GpuMemoryPlan> size_kv_from_gpu(model::LlamaModel& model, double utilization,
                                       int64_t free_before_load, int32_t prefill_tokens,
                                       int32_t max_running, int64_t context_tokens);

}  // namespace lightserve::serving
