// `lightserve info`: what a model file holds and what it costs to run.
#include <cstdio>
#include <map>
#include <string>

#include "app/lighttransfer_flags.h"
#include "app/model_flags.h"
#include "app/subcommands.h"
#include "base/units.h"
#include "kernels/backend.h"
#include "model/hf_folder.h"
#include "model/kv_arena.h"
#include "serving/model_loading.h"

namespace lightserve::cli {
namespace {

struct InfoOptions {
  ModelFlags model;  // --model or a dummy model (app/model_flags.h)
  bool tensors = false;
  int threads = 0;
  std::string device = serving::default_device();
  std::string kv_budget;  // bytes, or with a K/M/G/Ki/Mi/Gi suffix
  int64_t context = 0;    // 0: the model's context length
  serving::LightTransferOptions lt;
};

int run_info(const InfoOptions& o) {
  const auto source = model_source_or_report(o.model);
  if (!source) return 2;
  const auto kv_type = kv_type_or_report(o.model);
  if (!kv_type) return 2;
  auto loaded = serving::load_backend_and_model_or_report(o.device, o.threads, *source,
                                                          /*quiet=*/false, *kv_type);
  if (!loaded) return 1;
  std::unique_ptr<kernels::Backend>& backend = loaded->backend;
  std::unique_ptr<model::LlamaModel>& model = loaded->model;
  const auto& c = model->config();
  const auto& file = model->file();
  const auto& tok = model->tokenizer();

  std::string kind = "GGUF v" + std::to_string(file.version());
  if (source->format == model::LoadFormat::kDummy) {
    kind = "dummy weights made in memory";
  } else if (model::is_hf_folder(source->path)) {
    kind = "Hugging Face folder";
  }
  std::printf("file:            %s (%s, %s)\n", file.path().c_str(), kind.c_str(),
              human_bytes(static_cast<double>(file.file_size())).c_str());
  std::printf("architecture:    %s%s%s\n", c.architecture.c_str(), c.name.empty() ? "" : ", ",
              c.name.c_str());
  std::printf("layers:          %d\n", c.num_layers);
  std::printf("hidden:          %d (ffn %d)\n", c.hidden_dim, c.ffn_dim);
  std::printf("heads:           %d query, %d key/value (head_dim %d, GQA group %d)\n", c.num_heads,
              c.num_kv_heads, c.head_dim, c.num_heads / c.num_kv_heads);
  std::printf("vocabulary:      %d tokens (bos %d, eos %d)\n", c.vocab_size, tok.bos_id(),
              tok.eos_id());
  std::printf("context:         %d tokens\n", c.context_length);
  std::printf("rope:            base %.0f\n", c.rope_freq_base);
  std::printf("rms_norm_eps:    %g\n", c.rms_norm_eps);
  std::printf("embeddings:      %s\n",
              c.tied_embeddings ? "tied (logits reuse token_embd)" : "separate output");
  std::printf("chat template:   %s\n", model->chat_template()
                                           ? std::string(model->chat_template()->name()).c_str()
                                           : model->chat_error().c_str());

  std::map<std::string, std::pair<int, int64_t>> by_type;
  for (const auto& t : file.tensors()) {
    auto& e = by_type[std::string(kernels::traits(t.type).name)];
    e.first += 1;
    e.second += t.num_bytes;
  }
  std::printf("tensor types:   ");
  for (const auto& [name, e] : by_type) {
    std::printf(" %s×%d (%s)", name.c_str(), e.first,
                human_bytes(static_cast<double>(e.second)).c_str());
  }
  std::printf("\n");
  std::printf("weights:         %s in the file, %s resident after preparation\n",
              human_bytes(static_cast<double>(model->weight_file_bytes())).c_str(),
              human_bytes(static_cast<double>(model->weight_resident_bytes())).c_str());
  const double kv_per_token = 2.0 * c.num_layers * c.num_kv_heads * c.head_dim * 2;
  std::printf("KV cache (f16):  %s per token, %s at the full context\n",
              human_bytes(kv_per_token).c_str(),
              human_bytes(kv_per_token * c.context_length).c_str());
  std::printf("backend:         %s\n", backend->description().c_str());
  if (!o.kv_budget.empty()) {
    const int64_t budget = parse_bytes(o.kv_budget);
    if (budget < 0) {
      std::fprintf(stderr, "error: --kv-budget '%s' is not a byte count (e.g. 2GiB, 512M)\n",
                   o.kv_budget.c_str());
      return 2;
    }
    auto lt = o.lt.settings(c);
    if (!lt) {
      std::fprintf(stderr, "error: %s\n", lt.error().message.c_str());
      return 2;
    }
    const int64_t context = o.context > 0 ? o.context : c.context_length;
    // The plan only: a budget for a GPU can be reported on a machine that could not hold it.
    auto plan = model::KvArena::plan_for(c, lt.value(), budget, context);
    if (!plan) {
      std::fprintf(stderr, "error: %s\n", plan.error().message.c_str());
      return 2;
    }
    std::printf(
        "\nKV capacity (LightTransfer mode %s, lazy fraction %.2f, sink %d, window %d):\n%s\n",
        std::string(model::to_string(lt->mode)).c_str(), lt->lazy_fraction, lt->sink, lt->window,
        memory::format_capacity(plan.value()).c_str());
  }
  if (o.tensors) {
    std::printf("\n%-32s %-6s %-20s %s\n", "tensor", "type", "dims", "bytes");
    for (const auto& t : file.tensors()) {
      std::string dims;
      for (size_t i = 0; i < t.dims.size(); ++i)
        dims += (i ? " x " : "") + std::to_string(t.dims[i]);
      std::printf("%-32s %-6s %-20s %lld\n", t.name.c_str(),
                  std::string(kernels::traits(t.type).name).c_str(), dims.c_str(),
                  static_cast<long long>(t.num_bytes));
    }
  }
  return 0;
}

}  // namespace

void register_info(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd =
      app.add_subcommand("info", "Print a model's architecture, shapes, tensor types and memory");
  add_model_flags(cmd, o->model);
  cmd->add_flag("--tensors", o->tensors, "Also list every tensor");
  cmd->add_option("--threads", o->threads, "CPU threads; 0 = one per core")->capture_default_str();
  cmd->add_option("--device", o->device, serving::kDeviceHelp)->capture_default_str();
  cmd->add_option("--kv-budget", o->kv_budget,
                  "Print the KV capacity report for this many bytes (e.g. 2GiB, 512M)");
  cmd->add_option("--context", o->context,
                  "Context length per sequence for the capacity report (default: the model's)");
  add_lighttransfer_flags(cmd, o->lt);
  cmd->callback([o] { set_exit_code(run_info(*o)); });
}

}  // namespace lightserve::cli
