#include "serving/model_loading.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/units.h"

namespace lightserve::serving {

std::string default_model_path() {
  if (const char* env = std::getenv("LIGHTSERVE_MODEL"); env != nullptr && *env != '\0') return env;
  return LIGHTSERVE_DEFAULT_MODEL;
}

std::string default_device() {
  if (const char* env = std::getenv("LIGHTSERVE_DEVICE"); env != nullptr && *env != '\0')
    return env;
  return "cpu";
}

Result<std::unique_ptr<kernels::Backend>> make_backend(const std::string& device, int threads) {
  std::string why;
  auto backend = kernels::make_backend(device, threads, &why);
  if (backend == nullptr) return Error{why};
  return backend;
}

Result<std::unique_ptr<model::LlamaModel>> load_model(const model::ModelSource& source,
                                                      kernels::Backend& backend, bool quiet,
                                                      kernels::DType kv_type) {
  const auto start = std::chrono::steady_clock::now();
  const bool tty = isatty(STDERR_FILENO) != 0;
  int last_percent = -1;
  model::LoadOptions options;
  options.kv_type = kv_type;
  if (!quiet) {
    std::fprintf(stderr, "loading %s\n", source.describe().c_str());
    options.progress = [&](uint64_t done, uint64_t total) {
      const int percent = total ? static_cast<int>(100 * done / total) : 100;
      if (percent == last_percent) return;
      if (tty) {
        const int filled = percent / 4;
        std::fprintf(stderr, "\r  [%.*s%*s] %3d%%", filled, "#########################",
                     25 - filled, "", percent);
      } else if (percent % 25 == 0) {
        std::fprintf(stderr, "  %d%%\n", percent);
      }
      last_percent = percent;
    };
  }
  auto loaded = model::LlamaModel::load(source, backend, options);
  if (!quiet && tty && last_percent >= 0) std::fprintf(stderr, "\n");
  if (!loaded) return loaded.error();
  auto model = std::move(loaded).value();
  if (!quiet) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto& c = model->config();
    std::fprintf(
        stderr,
        "loaded %s: %d layers, hidden %d, %d/%d heads, vocab %d, %s weights in %.2f s on %s, "
        "%s KV\n",
        c.name.empty() ? "model" : c.name.c_str(), c.num_layers, c.hidden_dim, c.num_heads,
        c.num_kv_heads, c.vocab_size,
        human_bytes(static_cast<double>(model->weight_file_bytes())).c_str(), seconds,
        backend.description().c_str(), std::string(kernels::kv_type_name(kv_type)).c_str());
  }
  return model;
}

std::optional<LoadedModel> load_backend_and_model_or_report(const std::string& device, int threads,
                                                            const model::ModelSource& source,
                                                            bool quiet, kernels::DType kv_type) {
  auto backend = make_backend(device, threads);
  if (!backend) {
    std::fprintf(stderr, "error: %s\n", backend.error().message.c_str());
    return std::nullopt;
  }
  LoadedModel out{std::move(backend).value(), nullptr};
  auto model = load_model(source, *out.backend, quiet, kv_type);
  if (!model) {
    std::fprintf(stderr, "error: %s\n", model.error().message.c_str());
    return std::nullopt;
  }
  out.model = std::move(model).value();
  return out;
}

}  // namespace lightserve::serving
