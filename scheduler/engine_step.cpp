// Engine::step(): capacity stage, budget stage, the executor, sampling and stop rules, and the
// step invariants. Runs on the engine thread only.
#include <algorithm>
#include <cmath>
#include <exception>
#include <set>
#include <span>
#include <string>
#include <utility>

#include "base/check.h"
#include "scheduler/engine.h"

namespace lightserve::scheduler {

StepSummary Engine::step() {
  StepSummary summary;
  process_commands(summary);
  run_capacity_stage(clock_.now_seconds(), summary);
  StepPlan plan = run_budget_stage();
  check_step_invariants(&plan);
  summary.num_held = plan.num_held;
  ++num_steps_;
  if (plan.empty()) {
    last_plan_ = std::move(plan);
    return summary;
  }

  StepBatch batch;
  batch.entries.reserve(plan.work.size());
  for (const ScheduledWork& w : plan.work) {
    Request& r = *requests_.at(w.id);
    ExecutorEntry e;
    e.request_id = r.id;
    e.kv = &r.kv;
    e.layer_begin = w.layer_begin;
    e.layer_end = w.layer_end;
    e.needs_logits = w.layer_end == layout_.num_layers;
    if (w.decode) {
      e.position = r.num_tokens() - 1;
      e.tokens = std::span<const int32_t>(r.tokens).subspan(static_cast<size_t>(e.position), 1);
    } else {
      e.position = 0;
      e.tokens = std::span<const int32_t>(r.tokens).first(static_cast<size_t>(r.prefill_tokens));
      e.begins_sequence = r.begins_sequence;
      // Only the first prefill of the prompt (a recompute's prompt logprobs were sent already).
      if (e.needs_logits && r.params.prompt_logprobs >= 0 && r.num_preemptions == 0) {
        e.prompt_logprobs = &r.prompt_logprobs;
        e.prompt_logprobs_top = r.params.prompt_logprobs;
      }
    }
    if (e.needs_logits && e.prompt_logprobs == nullptr) e.num_candidates = candidates_needed(r);
    batch.entries.push_back(e);
  }
  summary.ran = true;
  summary.token_layers = plan.token_layers;
  summary.num_decodes = plan.num_decodes;
  summary.num_prefills = plan.num_prefills;

  output_.clear();
  // Nothing thrown by the forward pass may cross the engine thread (it would std::terminate the
  // daemon): an exception is that step's failure, like an error status.
  Status status;
  try {
    status = executor_.execute(batch, output_);
  } catch (const std::exception& e) {
    status = Error{std::string("exception in the forward pass: ") + e.what()};
  } catch (...) {
    status = Error{"unknown exception in the forward pass"};
  }
  const double now = clock_.now_seconds();
  if (!status.ok()) {
    summary.executor_failed = true;
    const EngineError error{ErrorKind::kInternal, "executor: " + status.message()};
    for (const ScheduledWork& w : plan.work) {
      finish(*requests_.at(w.id), FinishReason::kError, {}, -1, error, now, summary);
    }
  } else {
    apply_results(plan, batch, now, summary);
  }
  last_plan_ = std::move(plan);
  check_step_invariants(nullptr);
  return summary;
}

void Engine::run_capacity_stage(double now, StepSummary& summary) {
  std::vector<CapacityCandidate> running;
  running.reserve(running_.size());
  for (const Request* r : running_) {
    const int64_t needed =
        r->state == RequestState::kDecoding ? r->num_tokens() : r->prefill_tokens;
    running.push_back({r->id, r->footprint, needed, r->kv.token_capacity(), r->max_total_tokens()});
  }
  std::vector<CapacityCandidate> waiting;
  waiting.reserve(waiting_.size());
  for (const Request* r : waiting_) {
    if (r->fork_of != 0) continue;  // waits for its parent's prefill (start_forks)
    waiting.push_back({r->id, r->footprint, r->num_tokens(), 0, r->max_total_tokens()});
  }
  const CapacityDecision decision = capacity_.schedule({running, waiting, kv_.num_free_pages()});

  // Commit in an order that only ever has more free memory than the stage assumed.
  for (RequestId id : decision.preempt) preempt(*requests_.at(id));
  for (const CapacityDecision::Grow& g : decision.grow) {
    Request& r = *requests_.at(g.id);
    std::optional<memory::GrowPlan> plan = kv_.plan_grow(r.kv, g.token_capacity);
    LS_CHECK(plan.has_value()) << "capacity stage promised " << g.token_capacity
                               << " tokens to request " << r.id << " but the KV arena is short";
    kv_.commit(r.kv, std::move(*plan));
  }
  for (const CapacityDecision::Admit& a : decision.admit) {
    Request& r = *requests_.at(a.id);
    std::optional<memory::AdmitPlan> plan = kv_.plan_admit(r.footprint, a.token_capacity);
    LS_CHECK(plan.has_value()) << "capacity stage admitted request " << r.id << " with "
                               << a.token_capacity << " tokens but the KV arena is short";
    r.kv = kv_.commit(std::move(*plan));
    r.transition(RequestState::kPrefilling);
    r.prefill_tokens = r.num_tokens();
    r.prefill_layers_done = 0;
    r.num_computed_tokens = 0;
    r.begins_sequence = true;
    if (!r.admitted_seconds) r.admitted_seconds = now;
    erase_from(waiting_, &r);
    insert_sorted(running_, &r);
    num_queued_.fetch_sub(1);
    ++summary.num_admitted;
  }
  summary.num_preempted = static_cast<int32_t>(decision.preempt.size());
  LS_CHECK(kv_.num_free_pages() == decision.num_free_pages)
      << "capacity stage predicted " << decision.num_free_pages << " free pages; the KvManager has "
      << kv_.num_free_pages();
}

StepPlan Engine::run_budget_stage() const {
  std::vector<ComposerRequest> running;
  running.reserve(running_.size());
  const size_t max_unread = static_cast<size_t>(config_.max_unread_events);
  for (const Request* r : running_) {
    const bool decoding = r->state == RequestState::kDecoding;
    // A lagging reader holds its request back, decoding or recomputing after a preemption (whose
    // prefill ends with a token too); a fresh prefill has no events yet.
    const bool held = max_unread > 0 && r->events->unread() >= max_unread;
    running.push_back({r->id, decoding, r->prefill_tokens, r->prefill_layers_done, held});
  }
  return composer_.compose(running);
}

int32_t Engine::candidates_needed(const Request& r) const {
  if (max_candidates_ <= 0 || r.params.logprobs >= 0) return 0;
  int32_t k = r.sampler->candidates_needed(r.num_generated(), vocab_size_, max_candidates_);
  // Forks sample from this row too (start_forks): the most any of them reads, or the whole row.
  for (const RequestId id : r.forks) {
    if (k == 0) break;
    auto it = requests_.find(id);
    if (it == requests_.end() || it->second->fork_of != r.id) continue;
    const Request& f = *it->second;
    const int32_t fk =
        f.params.logprobs >= 0
            ? 0
            : f.sampler->candidates_needed(f.num_generated(), vocab_size_, max_candidates_);
    k = fk == 0 ? 0 : std::max(k, fk);
  }
  return k;
}

void Engine::apply_results(const StepPlan& plan, const StepBatch& batch, double now,
                           StepSummary& summary) {
  size_t num_outputs = 0;
  for (const ScheduledWork& w : plan.work) num_outputs += w.layer_end == layout_.num_layers;
  LS_CHECK(output_.rows.size() == num_outputs)
      << "executor returned " << output_.rows.size() << " rows for " << num_outputs << " entries";
  size_t row = 0;
  for (size_t i = 0; i < plan.work.size(); ++i) {
    const ScheduledWork& w = plan.work[i];
    Request& r = *requests_.at(w.id);
    if (!w.decode) {
      r.begins_sequence = false;
      r.prefill_layers_done = w.layer_end;
      if (w.layer_end < layout_.num_layers) continue;
      r.num_computed_tokens = r.prefill_tokens;
      num_prefill_tokens_ += r.prefill_tokens;
      if (r.num_preemptions == 0) num_prompt_tokens_ += r.num_prompt_tokens;
      r.transition(RequestState::kDecoding);
    } else {
      r.num_computed_tokens += 1;
    }
    const StepOutput::Row& out = output_.rows[row++];
    const int32_t asked = batch.entries[i].num_candidates;
    LS_CHECK(out.whole ? out.count == vocab_size_ : asked > 0 && out.count == asked)
        << "executor returned " << out.count << (out.whole ? " logits" : " candidates")
        << " for request " << r.id << ", which asked for "
        << (asked > 0 ? std::to_string(asked) + " candidates" : "its logits");
    LS_CHECK(out.offset >= 0 &&
             out.offset + out.count <= static_cast<int64_t>(out.whole ? output_.logits.size()
                                                                      : output_.candidates.size()))
        << "executor's row for request " << r.id << " lies outside its output";
    ++(out.whole ? num_whole_rows_ : num_candidate_rows_);
    // Before r samples: its first token may finish it, and its KV must still be there to copy.
    if (!r.forks.empty()) start_forks(r, out, now, summary);
    sample_and_emit(r, out, now, summary);
  }
}

void Engine::sample_and_emit(Request& r, const StepOutput::Row& row, double now,
                             StepSummary& summary) {
  if (!row.whole) {  // candidates_needed said r's sampler reads no more (and no logprobs)
    on_token(r, r.sampler->sample(output_.candidates_of(row)), std::nullopt, now, summary);
    return;
  }
  const std::span<const float> logits = output_.logits_of(row);
  const std::span<const int32_t> tokens(r.tokens);
  const int32_t token = r.sampler->sample(logits, tokens.first(r.num_prompt_tokens),
                                          tokens.subspan(r.num_prompt_tokens));
  on_token(r, token,
           r.params.logprobs >= 0 ? std::optional(token_logprobs(logits, token, r.params.logprobs))
                                  : std::nullopt,
           now, summary);
}

void Engine::start_forks(Request& parent, const StepOutput::Row& row, double now,
                         StepSummary& summary) {
  const std::vector<RequestId> forks = std::move(parent.forks);
  parent.forks.clear();
  // Only a first prefill of the prompt alone can be shared (forks are detached on preemption).
  LS_CHECK(parent.num_preemptions == 0 && parent.num_tokens() == parent.num_prompt_tokens)
      << "request " << parent.id << " shares a prefill that is not its prompt's";
  for (const RequestId id : forks) {
    auto it = requests_.find(id);
    if (it == requests_.end() || it->second->fork_of != parent.id) continue;  // aborted
    Request& f = *it->second;
    f.fork_of = 0;  // from here on an ordinary request, copied or not
    if (static_cast<int32_t>(running_.size()) >= config_.max_running) continue;
    std::optional<memory::AdmitPlan> plan = kv_.plan_admit(f.footprint, parent.kv.token_capacity());
    if (!plan) continue;  // no room now: it prefills itself when admitted
    f.kv = kv_.commit(std::move(*plan));
    Status status;
    try {
      status = executor_.fork(parent.id, f.id, f.kv);
    } catch (const std::exception& e) {
      status = Error{e.what()};
    }
    if (!status.ok()) {
      executor_.release(f.id);
      kv_.release(std::move(f.kv));
      continue;
    }
    f.transition(RequestState::kPrefilling);
    f.transition(RequestState::kDecoding);
    f.prefill_tokens = parent.prefill_tokens;
    f.prefill_layers_done = layout_.num_layers;
    f.num_computed_tokens = parent.num_computed_tokens;
    if (f.params.prompt_logprobs >= 0) f.prompt_logprobs = parent.prompt_logprobs;
    f.begins_sequence = false;
    f.admitted_seconds = now;
    erase_from(waiting_, &f);
    insert_sorted(running_, &f);
    num_queued_.fetch_sub(1);
    ++summary.num_admitted;
    ++num_forks_;
    num_prompt_tokens_ += f.num_prompt_tokens;
    sample_and_emit(f, row, now, summary);
  }
}

void Engine::detach_forks(Request& r) {
  for (const RequestId id : r.forks) {
    auto it = requests_.find(id);
    if (it != requests_.end() && it->second->fork_of == r.id) it->second->fork_of = 0;
  }
  r.forks.clear();
}

// Appends the sampled token, streams what the stop rules release, finishes on a stop.
void Engine::on_token(Request& r, int32_t token, std::optional<TokenLogprobs> logprobs, double now,
                      StepSummary& summary) {
  r.tokens.push_back(token);
  ++num_generated_tokens_;
  const double since = now - (r.first_token_seconds ? r.last_token_seconds : r.arrival_seconds);
  if (!r.first_token_seconds) r.first_token_seconds = now;
  r.last_token_seconds = now;

  if (r.stop_rules.is_stop_token(token)) {
    finish(r, FinishReason::kStop, final_text(r), token, std::nullopt, now, summary);
    return;
  }
  StopRules::TextResult text = r.stop_rules.push_text(r.text->push(token));
  RequestEvent event;
  event.kind = RequestEvent::Kind::kToken;
  event.request_id = r.id;
  event.token_id = token;
  event.text = std::move(text.text);
  event.time_seconds = now;
  event.inter_token_seconds = since;
  event.logprobs = std::move(logprobs);
  emit(r, std::move(event));
  if (text.stopped) {
    finish(r, FinishReason::kStop, {}, -1, std::nullopt, now, summary);
  } else if (r.stop_rules.reached_length(r.num_generated())) {
    finish(r, FinishReason::kLength, final_text(r), -1, std::nullopt, now, summary);
  }
}

// What is still held back at a finish that is not a stop string: the detokenizer's tail (through
// the stop rules: it may itself complete a stop string) and the stop rules' held text.
std::string Engine::final_text(Request& r) {
  StopRules::TextResult tail = r.stop_rules.push_text(r.text->flush());
  if (tail.stopped) return tail.text;
  return tail.text + r.stop_rules.flush();
}

void Engine::release_kv(Request& r) {
  executor_.release(r.id);  // before the KV it may point into goes back
  kv_.release(std::move(r.kv));
  erase_from(running_, &r);
}

void Engine::preempt(Request& r) {
  detach_forks(r);
  release_kv(r);
  r.transition(RequestState::kPreempted);
  r.num_computed_tokens = 0;
  r.prefill_layers_done = 0;
  r.prefill_tokens = 0;
  ++r.num_preemptions;
  ++num_preemptions_;
  insert_sorted(waiting_, &r);
  num_queued_.fetch_add(1);
}

void Engine::finish(Request& r, FinishReason reason, std::string text, int32_t stop_token,
                    std::optional<EngineError> error, double now, StepSummary& summary) {
  const int32_t num_lazy_layers = is_running(r.state) ? r.kv.layer_map().num_lazy_layers() : 0;
  detach_forks(r);
  if (is_running(r.state)) {
    release_kv(r);
  } else {
    erase_from(waiting_, &r);
    num_queued_.fetch_sub(1);
  }
  r.transition(reason == FinishReason::kAbort ? RequestState::kAborted : RequestState::kFinished);
  RequestEvent event;
  event.kind = RequestEvent::Kind::kFinished;
  event.request_id = r.id;
  event.token_id = stop_token;
  event.text = std::move(text);
  event.time_seconds = now;
  event.finish_reason = reason;
  event.error = std::move(error);
  RequestTimings& t = event.timings;
  t.queue_seconds = r.admitted_seconds ? *r.admitted_seconds - r.arrival_seconds : 0.0;
  t.time_to_first_token = r.first_token_seconds ? *r.first_token_seconds - r.arrival_seconds : 0.0;
  t.e2e_seconds = now - r.arrival_seconds;
  t.num_prompt_tokens = r.num_prompt_tokens;
  t.num_generated_tokens = r.num_generated();
  t.num_preemptions = r.num_preemptions;
  t.num_lazy_layers = num_lazy_layers;
  emit(r, std::move(event));
  ++summary.num_finished;
  requests_.erase(r.id);  // destroys r
}

void Engine::emit(Request& r, RequestEvent event) {
  if (!r.first_event_sent) {
    r.first_event_sent = true;
    event.prompt_logprobs = std::move(r.prompt_logprobs);
    r.prompt_logprobs.clear();
  }
  if (event.kind == RequestEvent::Kind::kFinished) event.request_tag = r.params.request_tag;
  if (observer_) observer_(event);
  r.events->push(std::move(event));
}

void Engine::check_step_invariants(const StepPlan* plan) const {
  LS_CHECK(static_cast<int32_t>(running_.size()) <= config_.max_running)
      << running_.size() << " running requests over max_running " << config_.max_running;
  LS_CHECK(running_.size() + waiting_.size() == requests_.size())
      << running_.size() << " running + " << waiting_.size() << " waiting != " << requests_.size()
      << " live requests";
  std::set<RequestId> seen;
  int64_t num_pages = 0;
  for (const Request* r : running_) {
    LS_CHECK(seen.insert(r->id).second) << "request " << r->id << " listed twice";
    LS_CHECK(requests_.count(r->id) == 1) << "running request " << r->id << " is unknown";
    LS_CHECK(is_running(r->state))
        << "request " << r->id << " in the running list is " << to_string(r->state);
    LS_CHECK(!r->kv.empty()) << "running request " << r->id << " holds no KV";
    const int64_t needed =
        r->state == RequestState::kDecoding ? r->num_tokens() - 1 : r->prefill_tokens;
    LS_CHECK(r->kv.token_capacity() >= needed)
        << "request " << r->id << " holds " << r->kv.token_capacity() << " tokens, needs "
        << needed;
    num_pages += layout_.pages_for(r->kv.token_capacity(), r->footprint);
  }
  for (const Request* r : waiting_) {
    LS_CHECK(seen.insert(r->id).second) << "request " << r->id << " listed twice";
    LS_CHECK(requests_.count(r->id) == 1) << "waiting request " << r->id << " is unknown";
    LS_CHECK(is_queued(r->state)) << "request " << r->id << " in the waiting list is "
                                  << to_string(r->state);
    LS_CHECK(r->kv.empty()) << "waiting request " << r->id << " still holds KV";
  }
  LS_CHECK(kv_.num_live_allocations() == static_cast<int32_t>(running_.size()))
      << kv_.num_live_allocations() << " KV allocations for " << running_.size() << " running";
  LS_CHECK(kv_.num_total_pages() - kv_.num_free_pages() == num_pages)
      << "running requests hold " << num_pages << " pages; the KvManager has "
      << kv_.num_total_pages() - kv_.num_free_pages() << " in use";
  if (config_.audit_kv_every_step) kv_.check_invariants();
  if (plan == nullptr) return;
  int64_t token_layers = 0;
  std::set<RequestId> planned;
  for (const ScheduledWork& w : plan->work) {
    LS_CHECK(planned.insert(w.id).second) << "request " << w.id << " scheduled twice in a step";
    auto it = requests_.find(w.id);
    LS_CHECK(it != requests_.end() && is_running(it->second->state))
        << "scheduled request " << w.id << " is not running";
    if (w.decode) {
      LS_CHECK(it->second->kv.token_capacity() >= it->second->num_tokens())
          << "decode of request " << w.id << " has no room for its token";
    }
    token_layers += w.token_layers();
  }
  LS_CHECK(token_layers == plan->token_layers && token_layers <= composer_.budget_token_layers())
      << "step of " << token_layers << " token-layers (plan says " << plan->token_layers
      << ") over the budget of " << composer_.budget_token_layers();
}

}  // namespace lightserve::scheduler
