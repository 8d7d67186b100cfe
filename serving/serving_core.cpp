#include "serving/serving_core.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <utility>

#include "base/units.h"
#include "memory/capacity.h"
#include "model/constraint_vocabulary.h"
#include "model/gguf.h"
#include "serving/gpu_memory.h"
#include "serving/model_loading.h"

namespace lightserve::serving {

using scheduler::EngineError;
using scheduler::ErrorKind;

namespace {

struct ModelChecked {
  model::LightTransferSettings settings;
  std::string lt_summary, lt_warning;  // what runs and why; a fraction above the validated one
  int32_t context = 0;
};

// What start() and preflight() both check of the configuration against the model.
Result<ModelChecked> check_against_model(const ServeConfig& config, const model::LlamaConfig& mc) {
  ModelChecked out;
  auto resolved = config.lighttransfer.resolve(mc);
  if (!resolved) return Error{"lighttransfer: " + resolved.error().message};
  out.settings = std::move(resolved.value().settings);
  out.lt_summary = std::move(resolved.value().summary);
  out.lt_warning = std::move(resolved.value().warning);
  out.context = config.context > 0 ? config.context : mc.context_length;
  if (out.context > mc.context_length) {
    return Error{"engine.context " + std::to_string(out.context) +
                 " exceeds the model's training context of " + std::to_string(mc.context_length) +
                 " tokens"};
  }
  if (config.gpu_memory_utilization > 0) return out;  // sized on the device at start()
  auto plan = model::KvArena::plan_for(mc, out.settings, config.kv_budget_bytes, out.context, 16,
                                       kernels::parse_kv_type(config.kv_dtype).value());
  if (!plan) return Error{"engine.kv_budget: " + plan.error().message};
  return out;
}

// LIGHTSERVE_FAULT_INJECTION (executor/fault_injection.h), for the reliability tests.
Result<std::optional<executor::FaultPlan>> faults_from_environment() {
  const char* spec = std::getenv("LIGHTSERVE_FAULT_INJECTION");
  if (spec == nullptr || *spec == '\0') return std::optional<executor::FaultPlan>();
  auto plan = executor::FaultPlan::parse(spec);
  if (!plan) return Error{"LIGHTSERVE_FAULT_INJECTION: " + plan.error().message};
  return std::optional<executor::FaultPlan>(std::move(plan).value());
}

// One line per finished request on stderr (server.request_log), written whole.
void log_request(const scheduler::RequestEvent& e, bool json) {
  const scheduler::RequestTimings& t = e.timings;
  const char* finish =
      scheduler::to_string(e.finish_reason.value_or(scheduler::FinishReason::kStop));
  std::string id;  // the frontends pass [A-Za-z0-9._:-] only; keep the line well-formed anyway
  for (const char c : e.request_tag) id += (c == '"' || c == '\\' || c < 0x20) ? '_' : c;
  char line[512];
  if (json) {
    std::snprintf(line, sizeof line,
                  "{\"event\":\"request\",\"id\":\"%s\",\"prompt_tokens\":%d,\"output_tokens\":%d,"
                  "\"queue_s\":%.4f,\"ttft_s\":%.4f,\"e2e_s\":%.4f,\"preemptions\":%d,"
                  "\"lazy_layers\":%d,\"finish\":\"%s\"}\n",
                  id.c_str(), t.num_prompt_tokens, t.num_generated_tokens, t.queue_seconds,
                  t.time_to_first_token, t.e2e_seconds, t.num_preemptions, t.num_lazy_layers,
                  finish);
  } else {
    std::snprintf(line, sizeof line,
                  "request id=%s prompt_tokens=%d output_tokens=%d queue=%.4fs ttft=%.4fs "
                  "e2e=%.4fs preemptions=%d lazy_layers=%d finish=%s\n",
                  id.c_str(), t.num_prompt_tokens, t.num_generated_tokens, t.queue_seconds,
                  t.time_to_first_token, t.e2e_seconds, t.num_preemptions, t.num_lazy_layers,
                  finish);
  }
  std::fputs(line, stderr);
}

// FNV-1a over the fields that decide a response's tokens, each followed by a separator.
std::string fingerprint(const ServeConfig& config, const ModelInfo& info,
                        const model::LightTransferSettings& lt, int32_t context) {
  uint64_t hash = 14695981039346656037ull;
  const auto mix = [&hash](const std::string& field) {
    for (const char c : field + '\x1f') {
      hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    }
  };
  for (const std::string& field :
       std::initializer_list<std::string>{info.name,
                                          info.path,
                                          info.architecture,
                                          std::to_string(info.num_layers),
                                          std::to_string(info.hidden_dim),
                                          std::to_string(info.num_heads),
                                          std::to_string(info.num_kv_heads),
                                          std::to_string(info.vocab_size),
                                          std::to_string(info.weight_bytes),
                                          std::string(model::to_string(lt.mode)),
                                          std::to_string(lt.lazy_fraction),
                                          std::to_string(lt.sink),
                                          std::to_string(lt.window),
                                          std::to_string(lt.w_last),
                                          std::to_string(lt.plan.has_value()),
                                          std::to_string(context),
                                          config.device,
                                          config.policy,
                                          std::string(LIGHTSERVE_BUILD_ID),
                                          std::string(__VERSION__)}) {
    mix(field);
  }
  char text[24];
  std::snprintf(text, sizeof text, "fp_%016llx", static_cast<unsigned long long>(hash));
  return text;
}

}  // namespace

Status ServingCore::preflight(const ServeConfig& config) {
  if (Status s = config.validate(); !s) return s;
  if (auto faults = faults_from_environment(); !faults) return faults.error();
  auto file = model::open_model_file(config.model_source(), /*with_weights=*/false);
  if (!file) return Status::Ok();  // start() names the file's problem as it loads
  auto mc = model::LlamaConfig::from_gguf(*file.value());
  if (!mc) return Status::Ok();
  auto checked = check_against_model(config, mc.value());
  if (!checked) return checked.error();
  return Status::Ok();
}

Result<std::unique_ptr<ServingCore>> ServingCore::start(const ServeConfig& config, std::FILE* log) {
  if (Status s = config.validate(); !s) return Error{s.message()};
  std::unique_ptr<ServingCore> se(new ServingCore());
  se->config_ = config;
  auto backend = make_backend(config.device, config.threads);
  if (!backend) return Error{"model.device: " + backend.error().message};
  se->backend_ = std::move(backend).value();
  int64_t free_before_load = 0, total_memory = 0;
  se->backend_->memory_info(&free_before_load, &total_memory);
  const model::ModelSource source = config.model_source();
  auto loaded = load_model(source, *se->backend_, /*quiet=*/log == nullptr,
                           kernels::parse_kv_type(config.kv_dtype).value());
  if (!loaded) return loaded.error();
  se->model_ = std::move(loaded).value();
  const model::LlamaConfig& mc = se->model_->config();

  auto checked = check_against_model(config, mc);
  if (!checked) return checked.error();
  se->settings_ = checked.value().settings;
  se->context_ = checked.value().context;
  EngineStackOptions options;
  options.kv_budget_bytes = config.kv_budget_bytes;
  options.context_tokens = se->context_;
  options.max_running = config.max_running;
  options.max_waiting = config.max_waiting;
  options.max_unread_events = config.max_stream_backlog;
  options.policy = config.policy;
  options.priority_scheduling = config.scheduling == "priority";
  options.step_budget_token_layers = config.step_budget;
  options.candidate_sampling = config.device_sampling == "on";
  if (config.gpu_memory_utilization > 0) {
    const int64_t step_tokens = config.step_budget > 0
                                    ? config.step_budget / mc.num_layers
                                    : scheduler::SchedulerConfig::kDefaultStepTokens;
    auto sized =
        size_kv_from_gpu(*se->model_, config.gpu_memory_utilization, free_before_load,
                         static_cast<int32_t>(std::clamp<int64_t>(step_tokens, 1, se->context_)),
                         config.max_running, se->context_);
    if (!sized) return sized.error();
    options.kv_budget_bytes = sized.value().kv_budget_bytes;
    if (log != nullptr) std::fprintf(log, "%s\n", sized.value().describe().c_str());
  }
  auto faults = faults_from_environment();
  if (!faults) return faults.error();
  options.faults = std::move(faults).value();
  if (options.faults) {
    std::fprintf(stderr, "warning: fault injection active (LIGHTSERVE_FAULT_INJECTION): %s\n",
                 options.faults->describe().c_str());
  }
  auto stack = EngineStack::create(*se->model_, se->settings_, options, se->clock_);
  if (!stack) return stack.error();
  se->stack_ = std::move(stack).value();
  se->engine_ = &se->stack_->engine();

  ModelInfo& info = se->info_;
  info.name = config.model_name;
  if (info.name.empty()) {
    info.name = source.format == model::LoadFormat::kDummy
                    ? std::string("dummy-").append(config.shape)
                    : std::filesystem::path(config.model_path).stem().string();
  }
  info.path = source.describe();
  info.architecture = "llama";
  info.num_layers = mc.num_layers;
  info.hidden_dim = mc.hidden_dim;
  info.num_heads = mc.num_heads;
  info.num_kv_heads = mc.num_kv_heads;
  info.vocab_size = mc.vocab_size;
  info.context_length = mc.context_length;
  info.weight_bytes = se->model_->weight_file_bytes();
  info.bos_id = se->model_->tokenizer().bos_id();
  info.eos_id = se->model_->tokenizer().eos_id();

  se->fingerprint_ = fingerprint(config, info, se->settings_, se->context_);
  se->constraints_ = std::make_unique<sampling::ConstraintCompiler>(
      model::constraint_vocabulary(se->model_->tokenizer(), mc.vocab_size));
  se->metrics_ = std::make_unique<Metrics>(info.name, se->stack_->arena().plan(), se->settings_);
  ServingCore* self = se.get();
  se->engine_->set_observer([self](const scheduler::RequestEvent& event) {
    self->metrics_->on_event(event);
    if (event.kind != scheduler::RequestEvent::Kind::kFinished) return;
    if (self->config_.request_log != "off") log_request(event, self->config_.request_log == "json");
    self->num_in_flight_.fetch_sub(1);
  });
  if (log != nullptr) {
    std::fprintf(log, "%s\n", memory::format_capacity(se->stack_->arena().plan()).c_str());
    std::fprintf(log, "%s; context %d tokens per request\n", checked.value().lt_summary.c_str(),
                 se->context_);
    if (!checked.value().lt_warning.empty())
      std::fprintf(log, "%s\n", checked.value().lt_warning.c_str());
  }
  se->engine_alive_ = true;
  se->thread_ = std::thread([self] { self->run_loop(); });
  return se;
}

ServingCore::~ServingCore() {
  stop();
}

void ServingCore::stop() {
  {
    std::shared_lock lock(engine_mutex_);
    if (!engine_) return;
    engine_->stop();
  }
  if (thread_.joinable()) thread_.join();
  std::unique_lock lock(engine_mutex_);
  engine_ = nullptr;
  stack_->reset_engine();  // aborts what is left, on this thread now that the loop is gone
}

void ServingCore::run_loop() {
  // Engine::run() steps while there is work and sleeps on its command queue otherwise; it returns
  // after stop(). The gauges are published after every step through the observer below.
  scheduler::Engine& engine = *engine_;
  const memory::KvManager& kv = stack_->arena().manager();
  engine.set_step_listener([&](const scheduler::StepSummary& summary) {
    const scheduler::EngineStats stats = engine.stats();
    num_running_ = stats.num_running;
    num_waiting_ = stats.num_waiting;
    num_used_pages_ = kv.num_total_pages() - kv.num_free_pages();
    num_full_layer_pages_ = static_cast<int32_t>(kv.num_full_lane_pages());
    num_lazy_layer_pages_ = static_cast<int32_t>(kv.num_lazy_lane_pages());
    // The stated rule for backend failures: a failed step fails only its own requests (the
    // engine did that already); kMaxConsecutiveFailedSteps in a row mean the device is gone, and
    // then /health and /ready fail and new requests are refused, so an orchestrator restarts us.
    if (summary.executor_failed) {
      if (++num_consecutive_failed_steps_ >= kMaxConsecutiveFailedSteps && !device_failed_) {
        device_failed_ = true;
        std::fprintf(stderr, "error: %d engine steps in a row failed; reporting unhealthy\n",
                     kMaxConsecutiveFailedSteps);
      }
    } else if (summary.ran) {
      num_consecutive_failed_steps_ = 0;
    }
    metrics_->on_step(stats, kv.usage(), stack_->executor().lazy_layer_counts());
  });
  try {
    engine.run();
  } catch (const std::exception& e) {
    // Outside the forward pass (which Engine::step catches): the engine's own bookkeeping threw,
    // e.g. std::bad_alloc. The loop cannot go on; report unhealthy, stop() aborts what is left.
    std::fprintf(stderr, "error: the engine thread failed: %s\n", e.what());
    device_failed_ = true;
  }
  engine_alive_ = false;
}

namespace {
EngineError invalid(std::string message) {
  return EngineError{ErrorKind::kInvalidArgument, std::move(message)};
}
}  // namespace

std::optional<EngineError> ServingCore::tokenize(const GenerateInput& in, std::vector<int32_t>& ids,
                                                 bool add_special) const {
  const int forms = (in.prompt_text ? 1 : 0) + (in.prompt_ids ? 1 : 0) + (in.messages ? 1 : 0);
  if (forms != 1) {
    return invalid(forms == 0 ? "no prompt: give prompt text, prompt token ids or messages"
                              : "give exactly one of prompt text, prompt token ids, messages");
  }
  const model::Tokenizer& tok = model_->tokenizer();
  if (in.prompt_ids) {
    ids = *in.prompt_ids;
  } else if (in.prompt_text) {
    ids = tok.encode(*in.prompt_text, add_special && tok.add_bos_token());
  } else {
    if (in.messages->empty()) return invalid("messages is empty");
    const model::ChatTemplate* chat = model_->chat_template();
    if (chat == nullptr) return invalid("this model has no chat template; send a prompt instead");
    const model::ChatOptions options{in.add_generation_prompt, in.continue_final_message,
                                     in.chat_template_kwargs};
    auto rendered = chat->render(*in.messages, options);
    if (!rendered) return invalid(rendered.error().message);
    // The rendered template carries its own special tokens (no extra BOS).
    ids = tok.encode(rendered.value(), false);
  }
  return std::nullopt;
}

std::optional<EngineError> ServingCore::prepare(const GenerateInput& in,
                                                scheduler::RequestParams& out) const {
  out = scheduler::RequestParams{};
  if (in.prompt_text && in.prompt_text->empty()) return invalid("the prompt is empty");
  if (auto error = tokenize(in, out.prompt, /*add_special=*/true)) return error;
  if (out.prompt.empty()) return invalid("the prompt is empty");
  const int32_t num_prompt = static_cast<int32_t>(out.prompt.size());
  const int32_t max_prompt = config_.max_prompt_tokens > 0 ? config_.max_prompt_tokens : context_;
  if (num_prompt > max_prompt) {
    // OUT_OF_RANGE on gRPC as the proto promises (a prompt that does not fit); 400 over HTTP.
    return EngineError{ErrorKind::kOutOfRange, "the prompt has " + std::to_string(num_prompt) +
                                                   " tokens, over the limit of " +
                                                   std::to_string(max_prompt)};
  }
  out.max_tokens = in.max_tokens.value_or(config_.default_max_tokens);
  const int32_t max_tokens_limit =
      config_.max_tokens_limit > 0 ? config_.max_tokens_limit : context_;
  if (out.max_tokens < 1) {
    return invalid("max_tokens must be >= 1, got " + std::to_string(out.max_tokens));
  }
  if (out.max_tokens > max_tokens_limit) {
    return invalid("max_tokens " + std::to_string(out.max_tokens) + " is over the limit of " +
                   std::to_string(max_tokens_limit));
  }
  if (!in.max_tokens) {
    // An unset max_tokens means "as many as fit": clamp the default to the context.
    out.max_tokens = std::max(1, std::min(out.max_tokens, context_ - num_prompt));
  }
  out.sampling = in.sampling;
  if (in.constraint) {
    auto compiled = constraints_->compile(*in.constraint);
    if (!compiled) return invalid(compiled.error().message);
    out.sampling.constraint = std::move(compiled).value();
  }
  out.stop_strings = in.stop;
  out.stop_token_ids = in.stop_token_ids;
  out.ignore_eos = in.ignore_eos;
  out.logprobs = in.logprobs;
  out.prompt_logprobs = in.prompt_logprobs;
  out.priority = in.priority;
  const memory::KvLayout& layout = stack_->arena().layout();
  switch (in.lighttransfer) {
    case LightTransferOverride::kServerDefault:
      break;
    case LightTransferOverride::kFull:
      out.footprint = layout.full_footprint();
      break;
    case LightTransferOverride::kStreaming:
      out.footprint = layout.streaming_footprint();
      break;
  }
  return std::nullopt;  // the engine checks the rest (ids, ranges, context, arena) in add()
}

scheduler::AddResult ServingCore::submit(scheduler::RequestParams params) {
  std::vector<scheduler::RequestParams> one;
  one.push_back(std::move(params));
  scheduler::AddGroupResult added = submit_group(std::move(one));
  scheduler::AddResult result;
  if (!added.ok()) {
    result.error = std::move(added.error);
    return result;
  }
  return std::move(added.members.front());
}

scheduler::AddGroupResult ServingCore::submit_group(std::vector<scheduler::RequestParams> group) {
  scheduler::AddGroupResult result;
  const int32_t n = static_cast<int32_t>(group.size());
  if (draining_.load()) {
    result.error = EngineError{ErrorKind::kUnavailable,
                               "the server is shutting down and takes no new requests"};
  } else if (!healthy()) {
    result.error = EngineError{ErrorKind::kUnavailable,
                               "the engine has failed (see /health); retry on another replica"};
  } else {
    std::shared_lock lock(engine_mutex_);
    if (!engine_) {
      result.error = EngineError{ErrorKind::kUnavailable, "the engine has stopped"};
    } else {
      num_in_flight_.fetch_add(n);
      result = engine_->add_group(std::move(group));
      if (!result.ok()) num_in_flight_.fetch_sub(n);
    }
  }
  if (!result.ok() && result.error->kind != ErrorKind::kInvalidArgument) metrics_->on_rejection();
  return result;
}

void ServingCore::abort(scheduler::RequestId id) {
  std::shared_lock lock(engine_mutex_);
  if (engine_) engine_->abort(id);
}

void ServingCore::begin_drain() {
  draining_ = true;
}

bool ServingCore::healthy() const {
  return engine_alive_.load() && !device_failed_.load();
}
bool ServingCore::ready() const {
  return healthy() && !draining_.load();
}

ServingSnapshot ServingCore::snapshot() const {
  ServingSnapshot s;
  s.num_running = num_running_.load();
  s.num_waiting = num_waiting_.load();
  s.num_used_pages = num_used_pages_.load();
  s.num_full_layer_pages = num_full_layer_pages_.load();
  s.num_lazy_layer_pages = num_lazy_layer_pages_.load();
  return s;
}

std::string ServingCore::render_metrics() {
  return metrics_->render();
}

}  // namespace lightserve::serving
