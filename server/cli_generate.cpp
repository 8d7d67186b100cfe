// `lightserve generate`: one prompt, streamed to stdout.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/sampler.h"
#include "server/cli_common.h"
#include "server/subcommands.h"

namespace lightserve::cli {
namespace {

int g_exit_code = 0;

struct GenerateOptions {
  std::string model = default_model_path();
  std::string prompt;
  std::string system;
  bool chat = false;
  int max_tokens = 256;
  bool ignore_eos = false;
  int threads = 0;
  int batch = 512;
  bool quiet = false;
  model::SamplingParams sampling;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
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
  auto backend = kernels::make_cpu_backend(o.threads);
  auto model = load_model_or_report(o.model, *backend, o.quiet);
  if (!model) return 1;
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
    text = chat->render(messages, /*add_generation_prompt=*/true);
  }
  const std::vector<int32_t> prompt = tok.encode(text, tok.add_bos_token(), /*parse_special=*/true);
  if (prompt.empty()) {
    std::fprintf(stderr, "error: the prompt is empty\n");
    return 2;
  }
  const int64_t context = model->config().context_length;
  if (static_cast<int64_t>(prompt.size()) >= context) {
    std::fprintf(stderr, "error: the prompt has %zu tokens; the model's context is %lld\n",
                 prompt.size(), static_cast<long long>(context));
    return 2;
  }
  const int32_t capacity = static_cast<int32_t>(
      std::min<int64_t>(context, static_cast<int64_t>(prompt.size()) + o.max_tokens));
  model::SequenceCache cache(model->config(), capacity);
  model::Sampler sampler(o.sampling);
  model::StreamDecoder stream(tok);
  std::vector<float> logits;

  const auto start = std::chrono::steady_clock::now();
  const int batch = std::max(1, o.batch);
  for (size_t pos = 0; pos < prompt.size(); pos += static_cast<size_t>(batch)) {
    const size_t n = std::min(prompt.size() - pos, static_cast<size_t>(batch));
    const model::BatchEntry entry{&cache, std::span(prompt).subspan(pos, n), false};
    if (Status s = model->forward({&entry, 1}, logits); !s) {
      std::fprintf(stderr, "error: %s\n", s.message().c_str());
      return 1;
    }
  }
  const double prefill_seconds = seconds_since(start);

  const auto decode_start = std::chrono::steady_clock::now();
  int generated = 0;
  const char* finish = "length";
  while (generated < o.max_tokens) {
    const int32_t id = sampler.sample(logits);
    ++generated;
    if (!o.ignore_eos && tok.is_end_of_generation(id)) {
      finish = "stop";
      break;
    }
    const std::string piece = stream.push(id);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (generated == o.max_tokens || cache.size() >= cache.capacity()) break;
    const model::BatchEntry entry{&cache, std::span(&id, 1), false};
    if (Status s = model->forward({&entry, 1}, logits); !s) {
      std::fprintf(stderr, "error: %s\n", s.message().c_str());
      return 1;
    }
  }
  const std::string rest = stream.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  const double decode_seconds = seconds_since(decode_start);
  if (!o.quiet) {
    std::fprintf(stderr,
                 "prompt: %zu tokens in %.3f s (%.1f tokens/s); generated: %d tokens in %.3f s "
                 "(%.1f tokens/s); finish: %s\n",
                 prompt.size(), prefill_seconds, prompt.size() / std::max(prefill_seconds, 1e-9),
                 generated, decode_seconds, generated / std::max(decode_seconds, 1e-9), finish);
  }
  return 0;
}

}  // namespace

void set_exit_code(int code) { g_exit_code = code; }
int exit_code() { return g_exit_code; }

void register_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate a continuation of one prompt, streamed to stdout");
  cmd->add_option("--model,-m", o->model, "GGUF model file")->capture_default_str();
  cmd->add_option("--prompt,-p", o->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", o->chat,
                "Format the prompt as a user message with the model's chat template (ChatML)");
  cmd->add_option("--system", o->system, "System message for --chat (default: the template's)");
  cmd->add_option("--max-tokens,-n", o->max_tokens, "Maximum tokens to generate")->capture_default_str();
  cmd->add_option("--temperature,-t", o->sampling.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens; 0 = off")->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass; 1 = off")->capture_default_str();
  cmd->add_option("--min-p", o->sampling.min_p, "Drop tokens below min-p × top probability; 0 = off")
      ->capture_default_str();
  cmd->add_option("--seed,-s", o->sampling.seed, "Random seed (same seed, same output)")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-generation tokens");
  cmd->add_option("--threads", o->threads, "CPU threads; 0 = one per core")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Prompt tokens per forward pass")->capture_default_str();
  cmd->add_flag("--quiet,-q", o->quiet, "No progress or statistics on stderr");
  cmd->callback([o] { set_exit_code(run_generate(*o)); });
}

}  // namespace lightserve::cli
