// From a device name and a model path to a backend and a loaded model: what serve, the CLI
// subcommands and the benchmarks all do first.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "kernels/backend.h"
#include "model/llama_model.h"

namespace lightserve::serving {

// The default model path: LIGHTSERVE_MODEL if set, else models/ in the source tree.
std::string default_model_path();

// LIGHTSERVE_DEVICE if set, else "cpu": the default of every --device option and of
// model.device.
std::string default_device();

// The backend `device` names: "cpu" (with `threads` workers, 0 = one per core), "cuda" or
// "cuda:N" (GPU N). The error says why a GPU cannot be used.
Result<std::unique_ptr<kernels::Backend>> make_backend(const std::string& device, int threads);
inline constexpr const char* kDeviceHelp =
    "Where the model runs: cpu, cuda or cuda:N (GPU N; needs a build with nvcc); default "
    "LIGHTSERVE_DEVICE, else cpu";

// Loads `source` (a GGUF file or a dummy model) with a KV cache of kv_type (f16 or bf16,
// model::LoadOptions::kv_type), showing a progress bar on stderr unless quiet; the error names the
// file.
Result<std::unique_ptr<model::LlamaModel>> load_model(
    const model::ModelSource& source, kernels::Backend& backend, bool quiet,
    kernels::DType kv_type = kernels::DType::kF16);
inline constexpr const char* kKvDtypeHelp =
    "Element type of the KV cache: f16 or bf16 (same 2 bytes; bf16 has f32's range, 8 bits of "
    "mantissa)";

// A backend and the model loaded on it.
struct LoadedModel {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::LlamaModel> model;
};

// make_backend + load_model, printing the error to stderr and returning nullopt on failure (what
// every CLI subcommand does first).
std::optional<LoadedModel> load_backend_and_model_or_report(
    const std::string& device, int threads, const model::ModelSource& source, bool quiet,
    kernels::DType kv_type = kernels::DType::kF16);

}  // namespace lightserve::serving
