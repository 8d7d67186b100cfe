// `lightserve generate`: one prompt, streamed to stdout.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "app/lighttransfer_flags.h"
#include "app/model_flags.h"
#include "app/subcommands.h"
#include "base/units.h"
#include "kernels/backend.h"
#include "model/generate.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "sampling/sampler.h"
#include "serving/model_loading.h"

namespace lightserve::cli {
namespace {

int g_exit_code = 0;

struct GenerateOptions {
  ModelFlags model;  // --model or a dummy model (app/model_flags.h)
  std::string prompt;
  std::string system;
  bool chat = false;
  int max_tokens = 256;
  bool ignore_eos = false;
  int threads = 0;
  std::string device = serving::default_device();
  bool quiet = false;
  bool verbose = false;
  sampling::SamplingParams sampling;
  serving::LightTransferOptions lt;
};

void print_layer_map(const model::HybridSequence& seq, const model::LightTransferSettings& lt) {
  const memory::LayerMap& map = seq.layer_map();
  std::fprintf(stderr,
               "LightTransfer: mode %s, score %s, %d full / %d lazy layers (sink %d, window %d)\n",
               std::string(model::to_string(lt.mode)).c_str(),
               std::string(model::to_string(lt.score)).c_str(), map.num_full_layers(),
               map.num_lazy_layers(), lt.sink, lt.window);
  std::fprintf(stderr, "  layer:  ");
  for (int32_t l = 0; l < map.num_layers(); ++l) std::fprintf(stderr, "%3d", l);
  std::fprintf(stderr, "\n  kind:   ");
  for (int32_t l = 0; l < map.num_layers(); ++l)
    std::fprintf(stderr, "  %c", map.is_lazy(l) ? 'L' : 'F');
  if (lt.mode == model::LtMode::kOnline) {
    std::fprintf(stderr, "\n  ratio%%: ");
    for (float r : seq.lazy_ratios()) std::fprintf(stderr, "%3.0f", std::min(99.0f, 100.0f * r));
  }
  std::fprintf(
      stderr,
      "\n  KV: %s held after prefill, %s at the peak (%d full-length layer caches at most)\n",
      human_bytes(static_cast<double>(seq.kv_bytes())).c_str(),
      human_bytes(static_cast<double>(seq.peak_kv_bytes())).c_str(), seq.peak_full_length_layers());
}

int run_generate(const GenerateOptions& o) {
  if (Status s = o.sampling.validate(); !s) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 2;
  }
  if (o.max_tokens < 0) {
    std::fprintf(stderr, "error: --max-tokens must be ≥ 0\n");
    return 2;
  }
  const auto source = model_source_or_report(o.model);
  if (!source) return 2;
  const auto kv_type = kv_type_or_report(o.model);
  if (!kv_type) return 2;
  auto loaded =
      serving::load_backend_and_model_or_report(o.device, o.threads, *source, o.quiet, *kv_type);
  if (!loaded) return 1;
  std::unique_ptr<kernels::Backend>& backend = loaded->backend;
  std::unique_ptr<model::LlamaModel>& model = loaded->model;
  const auto& config = model->config();
  auto resolved = o.lt.resolve(config);
  if (!resolved) {
    std::fprintf(stderr, "error: %s\n", resolved.error().message.c_str());
    return 2;
  }
  if (!o.quiet) std::fprintf(stderr, "%s\n", resolved->summary.c_str());
  if (!resolved->warning.empty()) std::fprintf(stderr, "%s\n", resolved->warning.c_str());
  const model::LightTransferSettings* lt = &resolved->settings;
  const auto& tok = model->tokenizer();

  std::string text = o.prompt;
  if (o.chat) {
    const model::ChatTemplate* chat = model->chat_template();
    if (chat == nullptr) {
      std::fprintf(stderr, "error: --chat: %s\n", model->chat_error().c_str());
      return 1;
    }
    std::vector<model::ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    text = chat->render(messages, /*add_generation_prompt=*/true).value();  // [system,] user
  }
  // A rendered chat carries its own BOS where the template has one.
  const std::vector<int32_t> prompt =
      tok.encode(text, !o.chat && tok.add_bos_token(), /*parse_special=*/true);
  if (prompt.empty()) {
    std::fprintf(stderr, "error: the prompt is empty\n");
    return 2;
  }
  const int64_t context = config.context_length;
  if (static_cast<int64_t>(prompt.size()) >= context) {
    std::fprintf(stderr, "error: the prompt has %zu tokens; the model's context is %lld\n",
                 prompt.size(), static_cast<long long>(context));
    return 2;
  }
  const int32_t capacity = static_cast<int32_t>(
      std::min<int64_t>(context, static_cast<int64_t>(prompt.size()) + o.max_tokens));
  auto arena = model::KvArena::create_for(*backend, config, *lt, capacity);
  if (!arena) {
    std::fprintf(stderr, "error: %s\n", arena.error().message.c_str());
    return 2;
  }
  auto seq = model::HybridSequence::create(*arena.value(), config, *lt, capacity);
  if (!seq) {
    std::fprintf(stderr, "error: %s\n", seq.error().message.c_str());
    return 2;
  }

  model::StreamDecoder stream(tok);
  model::GenerateParams params;
  params.max_tokens = o.max_tokens;
  params.ignore_eos = o.ignore_eos;
  params.sampling = o.sampling;
  bool map_printed = false;
  auto result = model::generate(*model, *seq.value(), prompt, params, [&](int32_t id) {
    if (o.verbose && !map_printed) {
      print_layer_map(*seq.value(), *lt);
      map_printed = true;
    }
    const std::string piece = stream.push(id);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  if (!result) {
    std::fprintf(stderr, "error: %s\n", result.error().message.c_str());
    return 1;
  }
  const std::string rest = stream.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  if (o.verbose && !map_printed) print_layer_map(*seq.value(), *lt);
  if (!o.quiet) {
    const auto& r = result.value();
    std::fprintf(stderr,
                 "prompt: %zu tokens in %.3f s (%.1f tokens/s); generated: %zu tokens in %.3f s "
                 "(%.1f tokens/s); finish: %s\n",
                 prompt.size(), r.prefill_seconds,
                 prompt.size() / std::max(r.prefill_seconds, 1e-9), r.tokens.size(),
                 r.decode_seconds, r.tokens.size() / std::max(r.decode_seconds, 1e-9),
                 r.stopped ? "stop" : "length");
  }
  return 0;
}

}  // namespace

void set_exit_code(int code) {
  g_exit_code = code;
}
int exit_code() {
  return g_exit_code;
}

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd =
      app.add_subcommand("generate", "Generate a continuation of one prompt, streamed to stdout");
  add_model_flags(cmd, o->model);
  cmd->add_option("--prompt,-p", o->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", o->chat,
                "Format the prompt as a user message with the model's chat template (ChatML)");
  cmd->add_option("--system", o->system, "System message for --chat (default: the template's)");
  cmd->add_option("--max-tokens,-n", o->max_tokens, "Maximum tokens to generate")
      ->capture_default_str();
  cmd->add_option("--temperature,-t", o->sampling.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens; 0 = off")
      ->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass; 1 = off")
      ->capture_default_str();
  cmd->add_option("--min-p", o->sampling.min_p,
                  "Drop tokens below min-p × top probability; 0 = off")
      ->capture_default_str();
  cmd->add_option("--repeat-penalty", o->sampling.repetition_penalty,
                  "Divide the logits of tokens already in the prompt or output by this; 1 = off")
      ->capture_default_str();
  cmd->add_option("--presence-penalty", o->sampling.presence_penalty,
                  "Subtract from the logit of every token the output holds; 0 = off")
      ->capture_default_str();
  cmd->add_option("--frequency-penalty", o->sampling.frequency_penalty,
                  "Subtract per occurrence in the output; 0 = off")
      ->capture_default_str();
  cmd->add_option("--seed,-s", o->sampling.seed, "Random seed (same seed, same output)")
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-generation tokens");
  cmd->add_option("--threads", o->threads, "CPU threads; 0 = one per core")->capture_default_str();
  cmd->add_option("--device", o->device, serving::kDeviceHelp)->capture_default_str();
  cmd->add_flag("--quiet,-q", o->quiet, "No progress or statistics on stderr");
  cmd->add_flag("--verbose,-v", o->verbose,
                "Print the request's LightTransfer layer map, lazy ratios and KV bytes on stderr");
  add_lighttransfer_flags(cmd, o->lt);
  cmd->callback([o] { set_exit_code(run_generate(*o)); });
}

}  // namespace lightserve::cli
