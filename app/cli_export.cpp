// `lightserve export`: writes the model a source names as a GGUF file. Its use is the llama.cpp
// comparison at real shapes (issue 12, scripts/gpu_check.sh step 6): a dummy model written here
// holds exactly the weights `--load-format dummy` runs, so llama.cpp loads the same bytes we serve.
// A dummy model is written tensor by tensor (filled and written by --threads threads, never held
// whole); a file or Hugging Face folder is written as lightserve reads it.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "app/model_flags.h"
#include "app/subcommands.h"
#include "base/units.h"
#include "model/gguf_write.h"

namespace lightserve::cli {
namespace {

struct ExportOptions {
  ModelFlags model;  // --model or a dummy model (app/model_flags.h)
  std::string output;
  int threads = 0;
  bool quiet = false;
};

int run_export(const ExportOptions& o) {
  const auto source = model_source_or_report(o.model);
  if (!source) return 2;
  const bool dummy = source->format == model::LoadFormat::kDummy;
  const auto start = std::chrono::steady_clock::now();
  auto file = model::open_model_file(*source, /*with_weights=*/!dummy);
  if (!file) {
    std::fprintf(stderr, "error: %s\n", file.error().message.c_str());
    return 1;
  }
  model::GgufWriteOptions options;
  if (dummy) options.fill = model::dummy_weight_fill(*source);
  options.num_threads = o.threads > 0
                            ? o.threads
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int last_percent = -1;
  const bool terminal = isatty(STDERR_FILENO) == 1;
  if (!o.quiet) {
    options.progress = [&last_percent, terminal](uint64_t done, uint64_t total) {
      const int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
      if (percent / 10 != last_percent / 10) {  // every 10%: one line each unless a terminal
        std::fprintf(stderr, terminal ? "\rwriting: %3d%%" : "writing: %3d%%\n", percent);
        last_percent = percent;
      }
    };
  }
  if (Status st = model::write_gguf(*file.value(), o.output, options); !st) {
    if (!o.quiet && terminal) std::fprintf(stderr, "\n");
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t bytes = 0;
  for (const auto& t : file.value()->tensors()) bytes += static_cast<uint64_t>(t.num_bytes);
  if (!o.quiet && terminal) std::fprintf(stderr, "\n");
  std::printf("wrote %s: %s (%zu tensors, %s of weights) in %.1f s, %d threads\n", o.output.c_str(),
              source->describe().c_str(), file.value()->tensors().size(),
              human_bytes(static_cast<double>(bytes)).c_str(), seconds, options.num_threads);
  return 0;
}

}  // namespace

void register_export(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Write a model as a GGUF file: a dummy model (--load-format dummy --shape ... --dummy-type "
      "f16) with the exact weights lightserve makes for it, for llama.cpp to load");
  add_model_flags(cmd, o->model);
  cmd->add_option("--output,-o", o->output, "The GGUF file to write (replaced)")->required();
  cmd->add_option("--threads", o->threads, "Threads filling and writing tensors; 0 = one per core")
      ->capture_default_str();
  cmd->add_flag("--quiet,-q", o->quiet, "No progress on stderr");
  cmd->callback([o] { set_exit_code(run_export(*o)); });
}

}  // namespace lightserve::cli
