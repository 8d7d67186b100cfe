// Engine: construction, the thread-safe command side (add, abort, stop), run(), and observers.
// The step itself is in engine_step.cpp.
#include "scheduler/engine.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "base/check.h"

namespace lightserve::scheduler {

int64_t SchedulerConfig::min_budget(int32_t num_layers) const {
  const int64_t prefill_layers = layered_prefill ? 1 : num_layers;
  return static_cast<int64_t>(max_running) * num_layers + max_context_tokens * prefill_layers;
}

int64_t SchedulerConfig::budget_or_default(int32_t num_layers) const {
  const int64_t wanted =
      step_budget_token_layers > 0 ? step_budget_token_layers : kDefaultStepTokens * num_layers;
  return std::max(wanted, min_budget(num_layers));
}

Status SchedulerConfig::validate(int32_t num_layers) const {
  auto fail = [](const std::string& m) { return Status(Error{"engine config: " + m}); };
  if (num_layers < 1) return fail("the KV layout has no layers");
  if (max_context_tokens < 2) {
    return fail("max_context_tokens must be >= 2, got " + std::to_string(max_context_tokens));
  }
  if (max_running < 1) return fail("max_running must be >= 1, got " + std::to_string(max_running));
  if (max_waiting < 0) return fail("max_waiting must be >= 0, got " + std::to_string(max_waiting));
  if (max_unread_events < 0) {
    return fail("max_unread_events must be >= 0, got " + std::to_string(max_unread_events));
  }
  if (growth_tokens < 0) {
    return fail("growth_tokens must be >= 0, got " + std::to_string(growth_tokens));
  }
  if (step_budget_token_layers != 0 && step_budget_token_layers < min_budget(num_layers)) {
    return fail("step_budget_token_layers " + std::to_string(step_budget_token_layers) +
                " is below max_running · num_layers + max_context_tokens" +
                (layered_prefill ? "" : " · num_layers") + " = " +
                std::to_string(min_budget(num_layers)) +
                " (every decode plus the longest prefill's smallest step)");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Engine>> Engine::create(SchedulerConfig config, memory::KvManager& kv,
                                               Executor& executor, const Detokenizer& detokenizer,
                                               const Clock& clock) {
  const int32_t num_layers = kv.layout().num_layers;
  if (Status s = config.validate(num_layers); !s.ok()) return Error{s.message()};
  if (executor.vocab_size() < 1) return Error{"engine: executor has an empty vocabulary"};
  if (kv.num_live_allocations() != 0) {
    return Error{"engine: the KvManager already holds allocations; the engine must own it"};
  }
  if (config.step_budget_token_layers == 0) {
    config.step_budget_token_layers = config.min_budget(num_layers);
  }
  return std::unique_ptr<Engine>(new Engine(std::move(config), kv, executor, detokenizer, clock));
}

Engine::Engine(SchedulerConfig config, memory::KvManager& kv, Executor& executor,
               const Detokenizer& detokenizer, const Clock& clock)
    : config_(std::move(config)),
      kv_(kv),
      executor_(executor),
      detokenizer_(detokenizer),
      clock_(clock),
      layout_(kv.layout()),
      num_total_pages_(kv.num_total_pages()),
      vocab_size_(executor.vocab_size()),
      max_candidates_(config_.candidate_sampling ? std::max(0, executor.max_candidates()) : 0),
      capacity_(layout_, config_.policy, config_.max_running, config_.growth_tokens),
      composer_(layout_.num_layers, config_.step_budget_token_layers, config_.layered_prefill) {}

Engine::~Engine() {
  StepSummary ignored;
  const double now = clock_.now_seconds();
  std::vector<Command> commands;
  {
    std::lock_guard lock(mutex_);
    commands.swap(commands_);
    stop_requested_ = true;
  }
  for (Command& c : commands) {
    if (c.kind != Command::Kind::kAdd) continue;
    RequestEvent event;
    event.kind = RequestEvent::Kind::kFinished;
    event.request_id = c.request->id;
    event.time_seconds = now;
    event.finish_reason = FinishReason::kAbort;
    event.timings.num_prompt_tokens = c.request->num_prompt_tokens;
    event.timings.e2e_seconds = now - c.request->arrival_seconds;
    emit(*c.request, std::move(event));
  }
  while (!requests_.empty()) {
    finish(*requests_.begin()->second, FinishReason::kAbort, {}, -1, std::nullopt, now, ignored);
  }
}

std::optional<EngineError> Engine::validate_params(const RequestParams& p) const {
  auto invalid = [](std::string m) {
    return EngineError{ErrorKind::kInvalidArgument, std::move(m)};
  };
  if (p.prompt.empty()) return invalid("the prompt is empty");
  for (int32_t id : p.prompt) {
    if (id < 0 || id >= vocab_size_) {
      return invalid("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                     std::to_string(vocab_size_) + ")");
    }
  }
  if (p.logprobs < -1 || p.logprobs > RequestParams::kMaxLogprobs) {
    return invalid("logprobs must be in [-1, " + std::to_string(RequestParams::kMaxLogprobs) +
                   "], got " + std::to_string(p.logprobs));
  }
  if (p.prompt_logprobs < -1 || p.prompt_logprobs > RequestParams::kMaxLogprobs) {
    return invalid("prompt_logprobs must be in [-1, " +
                   std::to_string(RequestParams::kMaxLogprobs) + "], got " +
                   std::to_string(p.prompt_logprobs));
  }
  if (p.max_tokens < 1)
    return invalid("max_tokens must be >= 1, got " + std::to_string(p.max_tokens));
  for (const std::string& s : p.stop_strings) {
    if (s.empty()) return invalid("a stop string is empty");
  }
  if (Status s = p.sampling.validate(); !s.ok()) return invalid(s.message());
  if (p.sampling.min_tokens > p.max_tokens) {
    return invalid("min_tokens " + std::to_string(p.sampling.min_tokens) + " is over max_tokens " +
                   std::to_string(p.max_tokens));
  }
  const memory::Footprint footprint = p.footprint.value_or(layout_.hybrid_footprint());
  if (Status s = layout_.check_footprint(footprint); !s.ok()) return invalid(s.message());

  const int64_t total = static_cast<int64_t>(p.prompt.size()) + p.max_tokens;
  const std::string lengths = "prompt of " + std::to_string(p.prompt.size()) +
                              " tokens + max_tokens " + std::to_string(p.max_tokens) + " = " +
                              std::to_string(total) + " tokens";
  if (total > config_.max_context_tokens) {
    return EngineError{ErrorKind::kOutOfRange, lengths + " exceeds the model context of " +
                                                   std::to_string(config_.max_context_tokens) +
                                                   " tokens"};
  }
  if (layout_.pages_for(total, footprint) > num_total_pages_) {
    // The most tokens one request of this footprint can hold in the empty arena.
    int64_t arena_tokens = 0;
    for (int64_t step = int64_t{1} << 40; step > 0; step /= 2) {
      if (layout_.pages_for(arena_tokens + step, footprint) <= num_total_pages_) {
        arena_tokens += step;
      }
    }
    return EngineError{ErrorKind::kOutOfRange,
                       lengths + " can never fit: the empty KV arena holds at most " +
                           std::to_string(arena_tokens) + " tokens for one request"};
  }
  return std::nullopt;
}

std::unique_ptr<Request> Engine::make_request(RequestParams params) {
  auto request = std::make_unique<Request>();
  request->id = next_id_.fetch_add(1);
  request->arrival_seconds = clock_.now_seconds();
  request->footprint = params.footprint.value_or(layout_.hybrid_footprint());
  request->tokens = params.prompt;
  request->num_prompt_tokens = static_cast<int32_t>(params.prompt.size());
  request->stop_rules = StopRules(config_.eos_token_ids, params.stop_token_ids, params.stop_strings,
                                  params.ignore_eos, params.max_tokens);
  // min_tokens holds back exactly the ids that would end the request (not its stop strings).
  if (params.sampling.min_tokens > 0) {
    params.sampling.min_tokens_blocked = request->stop_rules.stop_ids();
  }
  request->sampler.emplace(params.sampling);
  request->events = std::make_shared<EventStream>();
  request->params = std::move(params);
  return request;
}

AddResult Engine::add(RequestParams params) {
  std::vector<RequestParams> one;
  one.push_back(std::move(params));
  AddGroupResult added = add_group(std::move(one));
  AddResult result;
  if (!added.ok()) {
    result.error = std::move(added.error);
    return result;
  }
  return std::move(added.members.front());
}

AddGroupResult Engine::add_group(std::vector<RequestParams> group) {
  AddGroupResult result;
  auto refuse = [&](EngineError error) {
    num_rejections_.fetch_add(1, std::memory_order_relaxed);
    result.members.clear();
    result.error = std::move(error);
    return result;
  };
  if (group.empty()) return refuse({ErrorKind::kInvalidArgument, "a request group is empty"});
  for (const RequestParams& p : group) {
    if (std::optional<EngineError> error = validate_params(p)) return refuse(*error);
  }
  const int32_t n = static_cast<int32_t>(group.size());
  if (num_queued_.fetch_add(n) + n > config_.max_waiting) {
    num_queued_.fetch_sub(n);
    return refuse({ErrorKind::kResourceExhausted, "the waiting queue is full (" +
                                                      std::to_string(config_.max_waiting) +
                                                      " requests); retry later"});
  }
  std::vector<std::unique_ptr<Request>> requests;
  requests.reserve(group.size());
  for (RequestParams& p : group) {
    std::unique_ptr<Request> r = make_request(std::move(p));
    const Request& first = requests.empty() ? *r : *requests.front();
    if (config_.share_group_prefill && !requests.empty() &&
        r->params.prompt == first.params.prompt && r->footprint == first.footprint) {
      r->fork_of = first.id;
      requests.front()->forks.push_back(r->id);
    }
    result.members.push_back({r->id, r->events, std::nullopt});
    requests.push_back(std::move(r));
  }
  {
    // One lock for the whole group: its members reach the engine thread in one step, so no
    // parent can complete its prefill before its forks are there.
    std::lock_guard lock(mutex_);
    if (stop_requested_) {
      num_queued_.fetch_sub(n);
      return refuse({ErrorKind::kUnavailable, "the engine is stopping"});
    }
    for (std::unique_ptr<Request>& r : requests) {
      const RequestId id = r->id;
      commands_.push_back({Command::Kind::kAdd, id, std::move(r)});
    }
  }
  wake_.notify_all();
  return result;
}

void Engine::abort(RequestId id) {
  {
    std::lock_guard lock(mutex_);
    commands_.push_back({Command::Kind::kAbort, id, nullptr});
  }
  wake_.notify_all();
}

void Engine::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_requested_ = true;
  }
  wake_.notify_all();
}

bool Engine::has_work() const {
  if (!waiting_.empty() || !running_.empty()) return true;
  std::lock_guard lock(mutex_);
  return !commands_.empty();
}

void Engine::run() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      const bool busy = !waiting_.empty() || !running_.empty();
      if (!busy) wake_.wait(lock, [&] { return stop_requested_ || !commands_.empty(); });
      if (stop_requested_) return;
    }
    const StepSummary summary = step();
    if (step_listener_) step_listener_(summary);
    if (!summary.ran && summary.num_finished == 0) {
      // Nothing could run (e.g. waiting on nothing): sleep until a command instead of spinning.
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(10),
                     [&] { return stop_requested_ || !commands_.empty(); });
    }
  }
}

void Engine::process_commands(StepSummary& summary) {
  std::vector<Command> commands;
  {
    std::lock_guard lock(mutex_);
    commands.swap(commands_);
  }
  const double now = clock_.now_seconds();
  for (Command& c : commands) {
    if (c.kind == Command::Kind::kAdd) {
      Request* r = c.request.get();
      r->text = detokenizer_.start();
      requests_.emplace(r->id, std::move(c.request));
      insert_sorted(waiting_, r);
      continue;
    }
    auto it = requests_.find(c.id);
    if (it == requests_.end()) continue;  // unknown, or already finished
    finish(*it->second, FinishReason::kAbort, {}, -1, std::nullopt, now, summary);
  }
}

bool Engine::senior(const Request& a, const Request& b) const {
  if (config_.priority_scheduling && a.params.priority != b.params.priority) {
    return a.params.priority > b.params.priority;
  }
  return a.id < b.id;
}

void Engine::insert_sorted(std::vector<Request*>& list, Request* request) const {
  auto at = std::upper_bound(list.begin(), list.end(), request,
                             [&](const Request* a, const Request* b) { return senior(*a, *b); });
  list.insert(at, request);
}

void Engine::erase_from(std::vector<Request*>& list, const Request* request) {
  auto it = std::find(list.begin(), list.end(), request);
  LS_CHECK(it != list.end()) << "request " << request->id << " is not in the expected list";
  list.erase(it);
}

std::optional<RequestState> Engine::state_of(RequestId id) const {
  auto it = requests_.find(id);
  if (it == requests_.end()) return std::nullopt;
  return it->second->state;
}

std::optional<std::pair<int32_t, int32_t>> Engine::progress_of(RequestId id) const {
  auto it = requests_.find(id);
  if (it == requests_.end()) return std::nullopt;
  return std::pair{it->second->num_computed_tokens, it->second->prefill_layers_done};
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.num_waiting = static_cast<int32_t>(waiting_.size());
  s.num_running = static_cast<int32_t>(running_.size());
  s.num_held = last_plan_.num_held;
  s.num_steps = num_steps_;
  s.num_preemptions_total = num_preemptions_;
  s.num_admission_rejections_total = num_rejections_.load(std::memory_order_relaxed);
  s.num_prompt_tokens_total = num_prompt_tokens_;
  s.num_prefill_tokens_total = num_prefill_tokens_;
  s.num_forks_total = num_forks_;
  s.num_generated_tokens_total = num_generated_tokens_;
  s.num_candidate_rows_total = num_candidate_rows_;
  s.num_whole_rows_total = num_whole_rows_;
  return s;
}

}  // namespace lightserve::scheduler
