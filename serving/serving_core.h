// The daemon's core, shared by the gRPC and HTTP frontends (docs/design.md §1, §7): the model, the
// KV arena, the engine and the one thread that runs it, the metrics, and the drain state.
//
// Frontends turn their wire format into a GenerateInput, call prepare() (tokenize, render the
// chat template, apply the configured limits) and submit(); then they read the request's
// EventStream (set a listener on it, then pop) and call abort() when their client goes away.
// Every public method is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "executor/model_executor.h"
#include "kernels/backend.h"
#include "model/kv_arena.h"
#include "model/lighttransfer.h"
#include "model/llama_model.h"
#include "sampling/constraint.h"
#include "scheduler/clock.h"
#include "scheduler/engine.h"
#include "serving/engine_stack.h"
#include "serving/metrics.h"
#include "serving/serve_config.h"

namespace lightserve::serving {

// A per-request LightTransfer override (docs/design.md §4): the KV layout one request uses.
enum class LightTransferOverride : uint8_t {
  kServerDefault,  // the server's lighttransfer.mode
  kFull,           // every layer full: plain attention
  kStreaming,      // every layer lazy (sinks + recent window)
};

// A generation request, whatever protocol it came from. The frontends check the client's values
// (frontends/common/request_translation.h); prepare() checks what needs the model and the
// configured limits.
struct GenerateInput {
  // Exactly one prompt form.
  std::optional<std::string> prompt_text;          // tokenized, BOS added as the model says
  std::optional<std::vector<int32_t>> prompt_ids;  // used as given
  std::optional<std::vector<model::ChatMessage>> messages;  // rendered by the chat template
  std::optional<int32_t> max_tokens;  // nullopt: ServeConfig::default_max_tokens
  sampling::SamplingParams sampling;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool add_generation_prompt = true;  // chat messages: open the assistant's turn
  // Chat messages: continue the final (assistant) message instead; the template's variables.
  bool continue_final_message = false;
  std::vector<std::pair<std::string, std::string>> chat_template_kwargs;
  int32_t logprobs = -1;  // -1 none, else 0..20 top alternatives
  // -1 none, else the prompt's logprobs with 0..20 alternatives (RequestParams::prompt_logprobs)
  int32_t prompt_logprobs = -1;
  // vLLM's prompt_logprobs field (-1: not asked): the response lists the prompt's logprobs with
  // this many alternatives (prompt_logprobs above is at least this).
  int32_t prompt_logprobs_field = -1;
  int32_t priority = 0;
  LightTransferOverride lighttransfer = LightTransferOverride::kServerDefault;
  // For the frontends; prepare() makes one request of the prompt whatever they say. n: parallel
  // samples (frontends/common/generation_group.h); echo: the prompt's text before the output.
  int32_t n = 1;
  bool echo = false;
  // Constrained decoding (sampling/constraint.h): compiled in prepare(), so an invalid schema,
  // regex or grammar is refused before the request is queued.
  std::optional<sampling::ConstraintSpec> constraint;
};

// What the frontends report about the model and the server.
struct ModelInfo {
  std::string name;  // the served id
  std::string path;
  std::string architecture;
  int32_t num_layers = 0, hidden_dim = 0, num_heads = 0, num_kv_heads = 0, vocab_size = 0;
  int32_t context_length = 0;  // the model's training context
  int64_t weight_bytes = 0;
  int32_t bos_id = -1, eos_id = -1;
};

// Engine-thread state published after every step, for /metrics and GetServerInfo.
struct ServingSnapshot {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_used_pages = 0;        // KV pages in use, of every layer kind
  int32_t num_full_layer_pages = 0;  // of them, held by full layers
  int32_t num_lazy_layer_pages = 0;  // and by lazy layers
};

class ServingCore {
 public:
  // Loads the model (progress on `log` unless null), carves the arena, starts the engine thread.
  // Errors name the file or the setting (a budget that holds no request of `context` tokens
  // names both sizes).
  static Result<std::unique_ptr<ServingCore>> start(const ServeConfig& config, std::FILE* log);
  // The settings start() would refuse because of the model, checked from the model file's
  // metadata alone (no weights loaded, nothing allocated): a context over the model's training
  // context, LightTransfer settings for its layer count, a KV budget that holds no request. A
  // file that does not open is not reported here (start() reports it as it loads).
  static Status preflight(const ServeConfig& config);
  // stop(), if not done yet.
  ~ServingCore();
  // Stops the engine thread and aborts what is left: their streams get their kAbort finish here,
  // on the calling thread, so call it while the frontends still listen. Later submits are refused
  // (kUnavailable). Idempotent.
  void stop();

  // Requests: see the header comment. prepare() errors are kInvalidArgument or kOutOfRange with
  // a message naming the field; submit() adds kResourceExhausted (queue full) and kUnavailable
  // (draining).
  [[nodiscard]] std::optional<scheduler::EngineError> prepare(const GenerateInput& input,
                                                              scheduler::RequestParams& out) const;
  [[nodiscard]] scheduler::AddResult submit(scheduler::RequestParams params);
  // The n samples of one prompt, all or none (scheduler::Engine::add_group: one shared prefill).
  [[nodiscard]] scheduler::AddGroupResult submit_group(std::vector<scheduler::RequestParams> group);
  // The prompt's token ids exactly as prepare() makes them, without the length limits (the
  // tokenize endpoints): text with the model's BOS (unless add_special is false), ids as given,
  // chat messages rendered by the template (which carries its own special tokens) as the input's
  // add_generation_prompt, continue_final_message and chat_template_kwargs say.
  [[nodiscard]] std::optional<scheduler::EngineError> tokenize(const GenerateInput& input,
                                                               std::vector<int32_t>& ids,
                                                               bool add_special = true) const;
  void abort(scheduler::RequestId id);

  // Drain: ready() turns false and submit() refuses; in-flight requests go on.
  void begin_drain();
  bool draining() const { return draining_.load(); }
  bool ready() const;  // healthy and not draining
  // The engine thread runs and the backend works: false once kMaxConsecutiveFailedSteps steps in
  // a row failed in the executor, or the engine loop itself threw. Stays false (restart us).
  bool healthy() const;
  static constexpr int32_t kMaxConsecutiveFailedSteps = 3;
  int32_t num_in_flight() const { return num_in_flight_.load(); }

  const model::Tokenizer& tokenizer() const { return model_->tokenizer(); }
  const model::ChatTemplate* chat_template() const { return model_->chat_template(); }
  const ModelInfo& model_info() const { return info_; }
  // OpenAI's system_fingerprint: "fp_" + 16 hex digits of a hash of the model (name, file, shapes,
  // weight bytes), the settings that change outputs (LightTransfer, context, device, policy) and
  // the build (version, compiler). The same for every response of one server process.
  const std::string& system_fingerprint() const { return fingerprint_; }
  const ServeConfig& config() const { return config_; }
  const memory::CapacityPlan& capacity() const { return stack_->arena().plan(); }
  const model::LightTransferSettings& lighttransfer() const { return settings_; }
  int32_t context_tokens() const { return context_; }
  ServingSnapshot snapshot() const;
  // The Prometheus text of every metric, gauges refreshed first.
  std::string render_metrics();

 private:
  ServingCore() = default;
  void run_loop();

  ServeConfig config_;
  ModelInfo info_;
  std::string fingerprint_;
  model::LightTransferSettings settings_;
  int32_t context_ = 0;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<model::LlamaModel> model_;
  scheduler::SteadyClock clock_;
  std::unique_ptr<EngineStack> stack_;      // arena, executor, engine (after clock_: uses it)
  mutable std::shared_mutex engine_mutex_;  // stop() clears engine_ under it; users share it
  scheduler::Engine* engine_ = nullptr;     // stack_'s engine; null once stopped
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<sampling::ConstraintCompiler> constraints_;  // over the model's token bytes
  std::thread thread_;

  std::atomic<bool> draining_{false};
  std::atomic<bool> engine_alive_{false};
  std::atomic<bool> device_failed_{false};
  int32_t num_consecutive_failed_steps_ = 0;  // engine thread only
  std::atomic<int32_t> num_in_flight_{0};     // accepted, kFinished not yet emitted
  // Published by the engine thread after each step.
  std::atomic<int32_t> num_running_{0}, num_waiting_{0}, num_used_pages_{0},
      num_full_layer_pages_{0}, num_lazy_layer_pages_{0};
};

}  // namespace lightserve::serving
