#include "server/cli_common.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace lightserve::cli {

std::string default_model_path() {
  if (const char* env = std::getenv("LIGHTSERVE_MODEL"); env != nullptr && *env != '\0') return env;
  return LIGHTSERVE_DEFAULT_MODEL;
}

int64_t parse_bytes(const std::string& text) {
  size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (...) {
    return -1;
  }
  std::string unit = text.substr(end);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  double scale = 1;
  if (unit == "K" || unit == "k") scale = 1e3;
  else if (unit == "M" || unit == "m") scale = 1e6;
  else if (unit == "G" || unit == "g") scale = 1e9;
  else if (unit == "Ki") scale = 1024.0;
  else if (unit == "Mi") scale = 1024.0 * 1024;
  else if (unit == "Gi") scale = 1024.0 * 1024 * 1024;
  else if (!unit.empty()) return -1;
  if (!(value >= 0) || value * scale > 9e18) return -1;
  return static_cast<int64_t>(value * scale);
}

std::string default_device() {
  if (const char* env = std::getenv("LIGHTSERVE_DEVICE"); env != nullptr && *env != '\0') return env;
  return "cpu";
}

Result<std::unique_ptr<kernels::Backend>> make_backend(const std::string& device, int threads) {
  std::string why;
  auto backend = kernels::make_backend(device, threads, &why);
  if (backend == nullptr) return Error{why};
  return backend;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

Result<std::unique_ptr<model::LlamaModel>> load_model(const std::string& path,
                                                      kernels::Backend& backend, bool quiet) {
  const auto start = std::chrono::steady_clock::now();
  const bool tty = isatty(STDERR_FILENO) != 0;
  int last_percent = -1;
  model::LoadOptions options;
  if (!quiet) {
    std::fprintf(stderr, "loading %s\n", path.c_str());
    options.progress = [&](uint64_t done, uint64_t total) {
      const int percent = total ? static_cast<int>(100 * done / total) : 100;
      if (percent == last_percent) return;
      if (tty) {
        const int filled = percent / 4;
        std::fprintf(stderr, "\r  [%.*s%*s] %3d%%", filled, "#########################", 25 - filled,
                     "", percent);
      } else if (percent % 25 == 0) {
        std::fprintf(stderr, "  %d%%\n", percent);
      }
      last_percent = percent;
    };
  }
  auto loaded = model::LlamaModel::load(path, backend, options);
  if (!quiet && tty && last_percent >= 0) std::fprintf(stderr, "\n");
  if (!loaded) return loaded.error();
  auto model = std::move(loaded).value();
  if (!quiet) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto& c = model->config();
    std::fprintf(stderr, "loaded %s: %d layers, hidden %d, %d/%d heads, vocab %d, %s weights in %.2f s on %s\n",
                 c.name.empty() ? "model" : c.name.c_str(), c.num_layers, c.hidden_dim,
                 c.num_heads, c.num_kv_heads, c.vocab_size,
                 human_bytes(static_cast<double>(model->weight_file_bytes())).c_str(), seconds,
                 backend.description().c_str());
  }
  return model;
}

std::unique_ptr<model::LlamaModel> load_model_or_report(const std::string& path,
                                                        kernels::Backend& backend, bool quiet) {
  auto loaded = load_model(path, backend, quiet);
  if (!loaded) {
    std::fprintf(stderr, "error: %s\n", loaded.error().message.c_str());
    return nullptr;
  }
  return std::move(loaded).value();
}

}  // namespace lightserve::cli
