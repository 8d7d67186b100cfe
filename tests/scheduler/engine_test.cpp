// Engine scenarios with the fake executor: a per-step state table, refusals, aborts, stop
// strings through the engine, preemption by recompute, executor errors, timings, threads.
#include "scheduler/engine.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "tests/scheduler/engine_harness.h"

namespace lightserve::scheduler {
namespace {

using testing::collect;
using testing::fake_piece;
using testing::Harness;
using testing::HarnessOptions;
using testing::Outcome;
using testing::reference_run;

int run_until_idle(Harness& h, int max_steps = 1000) {
  int steps = 0;
  while (h.engine->has_work() && steps < max_steps) {
    (void)h.engine->step();
    ++steps;
  }
  EXPECT_FALSE(h.engine->has_work()) << "not idle after " << max_steps << " steps";
  return steps;
}

void expect_all_memory_back(const Harness& h) {
  EXPECT_EQ(h.kv.num_free_pages(), h.kv.num_total_pages());
  EXPECT_EQ(h.kv.num_live_allocations(), 0);
  EXPECT_EQ(h.executor.num_live_states(), 0u);
}

// TensorRT-LLM style: the expected work and states after each step of a small scenario.
TEST(EngineTest, StateTablePerStep) {
  HarnessOptions options;
  options.config.max_running = 2;
  options.config.max_context_tokens = 16;  // budget = 2 · 4 + 16 = 24 token-layers
  Harness h(options);
  const AddResult a = h.add({1, 2, 3, 4, 5, 6}, 3);
  const AddResult b = h.add({1, 2, 3, 4, 5, 6, 7, 8}, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(h.engine->config().step_budget_token_layers, 24);

  using S = RequestState;
  using Progress = std::optional<std::pair<int32_t, int32_t>>;  // (computed tokens, layers done)
  struct Row {
    std::string work;  // "<request>:<P|D><layer_begin>-<layer_end>" for each entry
    int64_t token_layers;
    std::optional<S> a_state;
    Progress a_progress;
    std::optional<S> b_state;
    Progress b_progress;
    int32_t free_pages;
  };
  const std::vector<Row> table = {
      // A's 6-token prompt takes all 4 layers (24); B is admitted but gets no budget.
      // Each holds 2 full lanes of 3 pages and 2 lazy lanes of 2 (the 8-token ring): 10 pages.
      {"A:P0-4 ", 24, S::kDecoding, {{6, 4}}, S::kPrefilling, {{0, 0}}, 256 - 10 - 10},
      // A decodes first (4); B's 8 tokens get (24 - 4) / 8 = 2 layers.
      {"A:D0-4 B:P0-2 ", 20, S::kDecoding, {{7, 4}}, S::kPrefilling, {{0, 2}}, 236},
      // A reaches max_tokens 3 and gives its 10 pages back; B finishes its prefill.
      {"A:D0-4 B:P2-4 ", 20, std::nullopt, std::nullopt, S::kDecoding, {{8, 4}}, 246},
      {"B:D0-4 ", 4, std::nullopt, std::nullopt, std::nullopt, std::nullopt, 256},
  };
  for (size_t i = 0; i < table.size(); ++i) {
    const Row& row = table[i];
    const StepSummary summary = h.engine->step();
    std::string work;
    for (const ScheduledWork& w : h.engine->last_plan().work) {
      work += std::string(w.id == a.id ? "A" : "B") + ":" + (w.decode ? "D" : "P") +
              std::to_string(w.layer_begin) + "-" + std::to_string(w.layer_end) + " ";
    }
    EXPECT_EQ(work, row.work) << "step " << i + 1;
    EXPECT_EQ(summary.token_layers, row.token_layers) << "step " << i + 1;
    EXPECT_EQ(h.engine->state_of(a.id), row.a_state) << "step " << i + 1;
    EXPECT_EQ(h.engine->progress_of(a.id), row.a_progress) << "step " << i + 1;
    EXPECT_EQ(h.engine->state_of(b.id), row.b_state) << "step " << i + 1;
    EXPECT_EQ(h.engine->progress_of(b.id), row.b_progress) << "step " << i + 1;
    EXPECT_EQ(h.kv.num_free_pages(), row.free_pages) << "step " << i + 1;
  }
  EXPECT_FALSE(h.engine->has_work());
  Outcome oa, ob;
  collect(*a.events, oa);
  collect(*b.events, ob);
  EXPECT_EQ(oa.tokens.size(), 3u);
  EXPECT_EQ(ob.tokens.size(), 2u);
  EXPECT_EQ(oa.finish->finish_reason, FinishReason::kLength);
  expect_all_memory_back(h);
}

TEST(EngineTest, ConfigErrorsNameTheSetting) {
  memory::KvManager kv(testing::small_layout(), 32);
  testing::FakeExecutor executor({});
  testing::FakeDetokenizer detokenizer;
  testing::FakeClock clock;
  SchedulerConfig config = testing::default_config();
  config.step_budget_token_layers = 50;  // below 4 · 4 + 64 = 80
  Result<std::unique_ptr<Engine>> engine = Engine::create(config, kv, executor, detokenizer, clock);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.error().message.find("step_budget_token_layers 50"), std::string::npos);
  EXPECT_NE(engine.error().message.find("= 80"), std::string::npos) << engine.error().message;
  config.step_budget_token_layers = 0;
  config.layered_prefill = false;
  Result<std::unique_ptr<Engine>> whole = Engine::create(config, kv, executor, detokenizer, clock);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole.value()->config().step_budget_token_layers, 4 * 4 + 64 * 4);
  config.max_running = 0;
  EXPECT_FALSE(Engine::create(config, kv, executor, detokenizer, clock).ok());
}

TEST(EngineTest, QueueFullIsRefusedAtOnce) {
  HarnessOptions options;
  options.config.max_waiting = 2;
  Harness h(options);
  EXPECT_TRUE(h.add({1, 2}, 4).ok());
  EXPECT_TRUE(h.add({1, 2}, 4).ok());
  const AddResult refused = h.add({1, 2}, 4);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error->kind, ErrorKind::kResourceExhausted);
  EXPECT_EQ(refused.events, nullptr);
  EXPECT_EQ(h.engine->stats().num_admission_rejections_total, 1);
  (void)h.engine->step();  // both admitted: the queue has room again
  EXPECT_TRUE(h.add({1, 2}, 4).ok());
  run_until_idle(h);
  expect_all_memory_back(h);
}

TEST(EngineTest, PromptThatCanNeverFitIsRefusedNamingBothLengths) {
  HarnessOptions options;
  options.num_pages = 20;  // 32 tokens for one hybrid request: 2 x 8 full + 2 x 2 lazy pages
  Harness h(options);
  const AddResult over_context = h.add(std::vector<int32_t>(60, 1), 10);
  ASSERT_FALSE(over_context.ok());
  EXPECT_EQ(over_context.error->kind, ErrorKind::kOutOfRange);
  EXPECT_NE(over_context.error->message.find("prompt of 60 tokens"), std::string::npos)
      << over_context.error->message;
  EXPECT_NE(over_context.error->message.find("max_tokens 10"), std::string::npos);
  EXPECT_NE(over_context.error->message.find("context of 64"), std::string::npos);

  const AddResult over_arena = h.add(std::vector<int32_t>(30, 1), 10);
  ASSERT_FALSE(over_arena.ok());
  EXPECT_EQ(over_arena.error->kind, ErrorKind::kOutOfRange);
  EXPECT_NE(over_arena.error->message.find("prompt of 30 tokens + max_tokens 10"),
            std::string::npos)
      << over_arena.error->message;
  EXPECT_NE(over_arena.error->message.find("at most 32 tokens"), std::string::npos);
  EXPECT_TRUE(h.add(std::vector<int32_t>(22, 1), 10).ok()) << "exactly 32 tokens fit";
  run_until_idle(h);
}

TEST(EngineTest, InvalidParamsAreRefused) {
  Harness h;
  auto kind_of = [&](RequestParams p) {
    const AddResult r = h.engine->add(std::move(p));
    return r.ok() ? std::nullopt : std::optional(r.error->kind);
  };
  RequestParams p;
  p.prompt = {1};
  p.max_tokens = 8;
  EXPECT_EQ(kind_of(RequestParams{}), ErrorKind::kInvalidArgument) << "empty prompt";
  RequestParams bad_token = p;
  bad_token.prompt = {64};
  EXPECT_EQ(kind_of(bad_token), ErrorKind::kInvalidArgument);
  RequestParams bad_max = p;
  bad_max.max_tokens = 0;
  EXPECT_EQ(kind_of(bad_max), ErrorKind::kInvalidArgument);
  RequestParams empty_stop = p;
  empty_stop.stop_strings = {""};
  EXPECT_EQ(kind_of(empty_stop), ErrorKind::kInvalidArgument);
  RequestParams bad_sampling = p;
  bad_sampling.sampling.top_p = 0.0f;
  EXPECT_EQ(kind_of(bad_sampling), ErrorKind::kInvalidArgument);
  RequestParams bad_footprint = p;
  bad_footprint.footprint = memory::Footprint{3, 3};
  EXPECT_EQ(kind_of(bad_footprint), ErrorKind::kInvalidArgument);
  RequestParams full = p;
  full.footprint = memory::Footprint{4, 0};  // the `full` override: every lane full
  EXPECT_EQ(kind_of(full), std::nullopt);
  run_until_idle(h);
  expect_all_memory_back(h);
}

TEST(EngineTest, AbortFreesMemoryInTheSameStep) {
  HarnessOptions options;
  options.config.max_running = 1;
  Harness h(options);
  const AddResult running = h.add(std::vector<int32_t>(8, 3), 20);
  const AddResult waiting = h.add({1, 2}, 20);
  const AddResult never_ran = h.add({1, 2}, 20);
  h.engine->abort(never_ran.id);  // before any step
  (void)h.engine->step();
  EXPECT_EQ(h.engine->state_of(running.id), RequestState::kDecoding);
  EXPECT_EQ(h.engine->state_of(waiting.id), RequestState::kWaiting);
  EXPECT_EQ(h.engine->state_of(never_ran.id), std::nullopt);
  EXPECT_LT(h.kv.num_free_pages(), h.kv.num_total_pages());

  h.engine->abort(running.id);
  h.engine->abort(waiting.id);
  h.engine->abort(12345);  // unknown: ignored
  const StepSummary summary = h.engine->step();
  EXPECT_EQ(summary.num_finished, 2);
  EXPECT_FALSE(summary.ran);
  expect_all_memory_back(h);
  for (const AddResult* r : {&running, &waiting, &never_ran}) {
    Outcome o;
    collect(*r->events, o);
    EXPECT_EQ(o.num_finished, 1);
    EXPECT_EQ(o.finish->finish_reason, FinishReason::kAbort);
  }
  h.engine->abort(running.id);  // again, after it finished: ignored
  (void)h.engine->step();
  Outcome again;
  collect(*running.events, again);
  EXPECT_EQ(again.num_finished, 0);
}

// Backpressure: a request whose reader leaves max_unread_events unread sits out decode steps,
// keeps its KV, and goes on once the reader pops; the other request is not slowed.
TEST(EngineTest, RequestWhoseReaderLagsIsHeldUntilItReads) {
  HarnessOptions options;
  options.config.max_running = 2;
  options.config.max_unread_events = 3;
  Harness h(options);
  const AddResult slow = h.add({1, 2, 3}, 10);
  const AddResult fast = h.add({4, 5, 6}, 10);
  ASSERT_TRUE(slow.ok() && fast.ok());
  Outcome fast_out;
  int held_steps = 0;
  for (int i = 0; i < 40 && fast_out.num_finished == 0; ++i) {
    const StepSummary s = h.engine->step();
    held_steps += s.num_held;
    collect(*fast.events, fast_out);  // the fast reader keeps up
    EXPECT_LE(slow.events->unread(), 3u) << "step " << i;
  }
  EXPECT_EQ(fast_out.num_finished, 1) << "the fast request was slowed by the slow one";
  EXPECT_GT(held_steps, 0);
  EXPECT_EQ(slow.events->unread(), 3u);  // 1 from the prefill, 2 decodes, then held
  EXPECT_EQ(h.engine->state_of(slow.id), RequestState::kDecoding);
  EXPECT_EQ(h.engine->stats().num_held, 1);
  EXPECT_LT(h.kv.num_free_pages(), h.kv.num_total_pages());  // it keeps its KV

  Outcome slow_out;
  for (int i = 0; i < 100 && h.engine->has_work(); ++i) {
    (void)h.engine->step();
    collect(*slow.events, slow_out);
  }
  ASSERT_EQ(slow_out.num_finished, 1);
  EXPECT_EQ(slow_out.finish->finish_reason, FinishReason::kLength);
  EXPECT_EQ(slow_out.finish->timings.num_generated_tokens, 10);
  EXPECT_EQ(h.engine->stats().num_held, 0);
  expect_all_memory_back(h);
}

TEST(EngineTest, StopStringSplitAcrossTokensIsCaughtAndNeverStreamed) {
  Harness h;
  RequestParams p;
  p.prompt = {5, 6, 7};
  p.max_tokens = 12;
  p.sampling.temperature = 0.0f;
  const testing::Reference ref = reference_run(h.executor, p, {0});
  ASSERT_EQ(ref.tokens.size(), 12u);
  std::string full;
  for (int32_t t : ref.tokens) full += fake_piece(t);
  // Two-letter pieces: the stop string starts inside token 2's piece and ends inside token 4's.
  const std::string stop = fake_piece(ref.tokens[2]).substr(1) + fake_piece(ref.tokens[3]) +
                           fake_piece(ref.tokens[4]).substr(0, 1);
  p.stop_strings = {stop};
  const size_t at = full.find(stop);
  ASSERT_LE(at, 5u);

  const AddResult r = h.engine->add(p);
  ASSERT_TRUE(r.ok());
  std::string streamed;
  while (h.engine->has_work()) {
    (void)h.engine->step();
    for (const RequestEvent& e : r.events->drain()) {
      streamed += e.text;
      EXPECT_EQ(streamed.find(stop), std::string::npos) << "stop string streamed";
      if (e.kind == RequestEvent::Kind::kFinished) {
        EXPECT_EQ(e.finish_reason, FinishReason::kStop);
      }
    }
  }
  EXPECT_EQ(streamed, full.substr(0, at));
  expect_all_memory_back(h);
}

TEST(EngineTest, HeldBackTextIsReleasedAtALengthFinish) {
  Harness h;
  RequestParams p;
  p.prompt = {9};
  p.max_tokens = 4;
  p.sampling.temperature = 0.0f;
  const testing::Reference ref = reference_run(h.executor, p, {0});
  std::string full;
  for (int32_t t : ref.tokens) full += fake_piece(t);
  p.stop_strings = {fake_piece(ref.tokens.back()) + "#"};  // never completes
  const AddResult r = h.engine->add(p);
  run_until_idle(h);
  Outcome o;
  collect(*r.events, o);
  EXPECT_EQ(o.text, full);
  EXPECT_EQ(o.finish->finish_reason, FinishReason::kLength);
  EXPECT_EQ(o.finish->text, fake_piece(ref.tokens.back())) << "held until the finish";
}

// Tight memory under `optimistic`: requests are preempted and recomputed, yet every output equals
// an undisturbed run, greedy and seeded sampling alike (the sampler lives with the request).
TEST(EngineTest, PreemptedRequestsMatchUndisturbedRuns) {
  for (const bool sampled : {false, true}) {
    HarnessOptions options;
    options.num_pages = 40;
    options.config.policy = AdmissionPolicy::kOptimistic;
    options.config.growth_tokens = 4;
    options.config.max_running = 4;
    Harness h(options);
    std::vector<RequestParams> params;
    std::vector<AddResult> added;
    for (int i = 0; i < 6; ++i) {
      RequestParams p;
      p.prompt = {i + 1, 2 * i + 3, 7, 11 + i, 5, 6, 7, 8};
      p.max_tokens = 16;
      p.sampling.temperature = sampled ? 1.0f : 0.0f;
      p.sampling.seed = 1000 + static_cast<uint64_t>(i);
      params.push_back(p);
      added.push_back(h.engine->add(p));
      ASSERT_TRUE(added.back().ok());
    }
    run_until_idle(h);
    EXPECT_GT(h.engine->stats().num_preemptions_total, 0) << "the test must preempt";
    int32_t num_preempted_requests = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      Outcome o;
      collect(*added[i].events, o);
      const testing::Reference ref = reference_run(h.executor, params[i], {0});
      EXPECT_EQ(o.tokens, ref.tokens) << "request " << i << (sampled ? " sampled" : " greedy");
      ASSERT_EQ(o.num_finished, 1);
      EXPECT_EQ(o.finish->finish_reason, ref.reason);
      num_preempted_requests += o.finish->timings.num_preemptions > 0;
    }
    EXPECT_GT(num_preempted_requests, 0);
    expect_all_memory_back(h);
  }
}

TEST(EngineTest, ExecutorErrorFinishesItsBatchWithAnInternalError) {
  Harness h;
  h.executor.fail_at_step(2);
  const AddResult a = h.add({1, 2, 3}, 8);
  (void)h.engine->step();  // prefill
  const StepSummary failed = h.engine->step();
  EXPECT_EQ(failed.num_finished, 1);
  Outcome o;
  collect(*a.events, o);
  ASSERT_EQ(o.num_finished, 1);
  EXPECT_EQ(o.finish->finish_reason, FinishReason::kError);
  ASSERT_TRUE(o.finish->error.has_value());
  EXPECT_EQ(o.finish->error->kind, ErrorKind::kInternal);
  EXPECT_NE(o.finish->error->message.find("injected failure"), std::string::npos);
  expect_all_memory_back(h);
  const AddResult b = h.add({1, 2, 3}, 3);  // the engine carries on
  run_until_idle(h);
  Outcome ob;
  collect(*b.events, ob);
  EXPECT_EQ(ob.finish->finish_reason, FinishReason::kLength);
}

TEST(EngineTest, ExecutorExceptionFailsItsStepOnlyAndTheEngineCarriesOn) {
  Harness h;
  const AddResult a = h.add({1, 2, 3}, 8);
  (void)h.engine->step();  // a's prefill
  h.executor.throw_at_step(h.executor.num_steps() + 1);
  const StepSummary failed = h.engine->step();  // a's first decode throws std::bad_alloc
  EXPECT_TRUE(failed.executor_failed);
  EXPECT_EQ(failed.num_finished, 1);
  Outcome o;
  collect(*a.events, o);
  ASSERT_EQ(o.num_finished, 1);
  EXPECT_EQ(o.finish->finish_reason, FinishReason::kError);
  ASSERT_TRUE(o.finish->error.has_value());
  EXPECT_EQ(o.finish->error->kind, ErrorKind::kInternal);
  EXPECT_NE(o.finish->error->message.find("bad_alloc"), std::string::npos)
      << o.finish->error->message;
  expect_all_memory_back(h);
  const AddResult b = h.add({1, 2, 3}, 3);  // later requests are served
  run_until_idle(h);
  Outcome ob;
  collect(*b.events, ob);
  EXPECT_EQ(ob.finish->finish_reason, FinishReason::kLength);
  EXPECT_EQ(ob.tokens.size(), 3u);
  expect_all_memory_back(h);
}

TEST(EngineTest, TimingsComeFromTheInjectedClock) {
  Harness h;
  const AddResult a = h.add({1, 2, 3}, 2);  // arrives at t = 100
  h.clock.advance(1.5);
  (void)h.engine->step();  // admitted and first token at 101.5
  h.clock.advance(0.25);
  (void)h.engine->step();  // second token at 101.75, length
  const std::vector<RequestEvent> events = a.events->drain();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_DOUBLE_EQ(events[0].inter_token_seconds, 1.5);
  EXPECT_DOUBLE_EQ(events[1].inter_token_seconds, 0.25);
  const RequestTimings& t = events[2].timings;
  EXPECT_DOUBLE_EQ(t.queue_seconds, 1.5);
  EXPECT_DOUBLE_EQ(t.time_to_first_token, 1.5);
  EXPECT_DOUBLE_EQ(t.e2e_seconds, 1.75);
  EXPECT_EQ(t.num_prompt_tokens, 3);
  EXPECT_EQ(t.num_generated_tokens, 2);
}

TEST(EngineTest, PriorityOrdersAdmission) {
  HarnessOptions options;
  options.config.max_running = 1;
  options.config.priority_scheduling = true;
  Harness h(options);
  RequestParams low;
  low.prompt = {1};
  low.max_tokens = 2;
  RequestParams high = low;
  high.priority = 5;
  const AddResult l = h.engine->add(low);
  const AddResult hi = h.engine->add(high);
  (void)h.engine->step();
  EXPECT_EQ(h.engine->state_of(hi.id), RequestState::kDecoding);
  EXPECT_EQ(h.engine->state_of(l.id), RequestState::kWaiting);
  run_until_idle(h);
}

TEST(EngineTest, DestructionAbortsWhatIsLeft) {
  Harness h;
  const AddResult a = h.add({1, 2, 3}, 30);
  (void)h.engine->step();
  const AddResult b = h.add({1, 2, 3}, 30);  // still a pending command
  h.engine.reset();
  for (const AddResult* r : {&a, &b}) {
    Outcome o;
    collect(*r->events, o);
    ASSERT_EQ(o.num_finished, 1);
    EXPECT_EQ(o.finish->finish_reason, FinishReason::kAbort);
  }
  expect_all_memory_back(h);
}

}  // namespace
}  // namespace lightserve::scheduler
