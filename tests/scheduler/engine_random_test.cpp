// Property tests: thousands of random requests (random prompt lengths, max_tokens, stop tokens,
// aborts) over tight memory, under both policies, checked against undisturbed runs; and with
// readers that lag (backpressure holds their requests), which must change no output.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "scheduler/engine.h"
#include "tests/scheduler/engine_harness.h"

namespace lightserve::scheduler {
namespace {

using testing::collect;
using testing::Harness;
using testing::HarnessOptions;
using testing::Outcome;
using testing::reference_run;

struct Tracked {
  RequestParams params;
  AddResult added;
  int64_t arrival_step = 0;
  int64_t num_ahead = 0;  // requests alive when it arrived
  bool aborted = false;
  Outcome outcome;
  int64_t finish_step = -1;
  bool lags = false;  // its reader pops only every 7th step
};

struct Case {
  AdmissionPolicy policy;
  uint32_t seed;
  bool layered_prefill = true;
  bool lagging_readers = false;  // max_unread_events 2; a third of the readers read every 7 steps
};

class EngineRandomTest : public ::testing::TestWithParam<Case> {};

TEST_P(EngineRandomTest, EveryRequestFinishesOnceWithItsUndisturbedOutput) {
  constexpr int kNumRequests = 2500;
  constexpr int32_t kMaxPrompt = 40;
  constexpr int32_t kMaxNew = 24;
  HarnessOptions options;
  options.num_pages = 104;  // a handful of requests at once
  options.config.policy = GetParam().policy;
  options.config.max_running = 5;
  options.config.max_waiting = 24;
  options.config.growth_tokens = 3;
  options.config.layered_prefill = GetParam().layered_prefill;
  options.model.eos_probability = 0.04;
  constexpr size_t kMaxUnread = 2;
  if (GetParam().lagging_readers) options.config.max_unread_events = kMaxUnread;
  Harness h(options);
  const int32_t num_layers = h.kv.layout().num_layers;
  const int64_t budget = h.engine->config().step_budget_token_layers;

  std::mt19937 rng(GetParam().seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::map<RequestId, Tracked> tracked;
  std::vector<RequestId> alive;
  int num_submitted = 0;
  int64_t num_refused = 0;
  int64_t step = 0;
  int64_t max_token_layers = 0;
  int64_t num_held_steps = 0;

  while (num_submitted < kNumRequests || h.engine->has_work()) {
    // About one arrival every four steps (the engine's pace), with rare bursts of 12 that
    // overflow the waiting queue.
    const int arrivals = uniform(0, 99) < 1 ? 12 : (uniform(0, 3) == 0 ? 1 : 0);
    for (int n = arrivals; n > 0 && num_submitted < kNumRequests; --n, ++num_submitted) {
      Tracked t;
      const int32_t prompt_len = uniform(1, kMaxPrompt);
      for (int32_t i = 0; i < prompt_len; ++i) t.params.prompt.push_back(uniform(1, 63));
      t.params.max_tokens = uniform(1, kMaxNew);
      t.params.sampling.temperature = 0.0f;
      if (uniform(0, 9) == 0) t.params.stop_token_ids = {uniform(1, 63)};
      if (uniform(0, 19) == 0) t.params.ignore_eos = true;
      t.added = h.engine->add(t.params);
      if (!t.added.ok()) {
        EXPECT_EQ(t.added.error->kind, ErrorKind::kResourceExhausted);
        ++num_refused;
        continue;
      }
      t.arrival_step = step;
      t.lags = GetParam().lagging_readers && uniform(0, 2) == 0;
      t.num_ahead = static_cast<int64_t>(alive.size());
      alive.push_back(t.added.id);
      tracked.emplace(t.added.id, std::move(t));
    }
    // Random aborts, some of finished requests (ignored).
    if (!alive.empty() && uniform(0, 24) == 0) {
      const RequestId id =
          alive[static_cast<size_t>(uniform(0, static_cast<int>(alive.size()) - 1))];
      tracked.at(id).aborted = true;
      h.engine->abort(id);
    }
    const StepSummary summary = h.engine->step();
    ++step;
    ASSERT_LE(summary.token_layers, budget);
    max_token_layers = std::max(max_token_layers, summary.token_layers);
    int32_t num_lagging = 0;
    for (auto it = alive.begin(); it != alive.end();) {
      Tracked& t = tracked.at(*it);
      // A held request never runs ahead of its reader by more than the limit (one step's event
      // and the finish may follow the limit's last token).
      if (GetParam().lagging_readers) {
        ASSERT_LE(t.added.events->unread(), kMaxUnread + 1);
      }
      num_lagging += t.lags && t.added.events->unread() >= kMaxUnread;
      if (t.lags && step % 7 != 0) {
        ++it;
        continue;
      }
      collect(*t.added.events, t.outcome);
      if (t.outcome.num_finished > 0) {
        t.finish_step = step;
        it = alive.erase(it);
      } else {
        ++it;
      }
    }
    ASSERT_LE(summary.num_held, num_lagging) << "a request was held whose reader keeps up";
    num_held_steps += summary.num_held;
    ASSERT_LT(step, 200000) << "no progress";
  }

  // No leaks: every page and executor state is back.
  EXPECT_EQ(h.kv.num_free_pages(), h.kv.num_total_pages());
  EXPECT_EQ(h.kv.num_live_allocations(), 0);
  EXPECT_EQ(h.executor.num_live_states(), 0u);
  const EngineStats stats = h.engine->stats();
  EXPECT_EQ(stats.num_running, 0);
  EXPECT_EQ(stats.num_waiting, 0);
  EXPECT_EQ(stats.num_admission_rejections_total, num_refused);
  for (const auto& steps : h.executor.steps()) {
    int64_t cost = 0;
    for (const auto& e : steps) {
      cost += static_cast<int64_t>(e.num_tokens) * (e.layer_end - e.layer_begin);
      if (e.prefill && !GetParam().layered_prefill) {
        ASSERT_EQ(e.layer_end - e.layer_begin, num_layers) << "a prefill split by layers";
      }
    }
    ASSERT_LE(cost, budget) << "budget exceeded at the executor";
  }

  int64_t num_aborted = 0;
  int64_t max_wait_ratio_violations = 0;
  double max_wait_ratio = 0;
  for (auto& [id, t] : tracked) {
    collect(*t.added.events, t.outcome);
    ASSERT_EQ(t.outcome.num_finished, 1) << "request " << id << " must finish exactly once";
    EXPECT_FALSE(t.outcome.event_after_finish) << "request " << id;
    const testing::Reference ref = reference_run(h.executor, t.params, {0});
    const FinishReason reason = *t.outcome.finish->finish_reason;
    if (reason == FinishReason::kAbort) {
      EXPECT_TRUE(t.aborted) << "request " << id;
      ++num_aborted;
      ASSERT_LE(t.outcome.tokens.size(), ref.tokens.size());
      EXPECT_TRUE(std::equal(t.outcome.tokens.begin(), t.outcome.tokens.end(), ref.tokens.begin()))
          << "request " << id << ": an aborted request's tokens are a prefix of its run";
    } else {
      EXPECT_EQ(t.outcome.tokens, ref.tokens) << "request " << id;
      EXPECT_EQ(reason, ref.reason) << "request " << id;
    }
    // No starvation under FCFS: each request ahead (or running) when it arrived, and itself,
    // take at most num_layers prefill steps + max_tokens decode steps once they are the oldest.
    const int64_t bound = (t.num_ahead + 1) * (num_layers + kMaxNew + 1);
    if (t.finish_step - t.arrival_step > bound) ++max_wait_ratio_violations;
    max_wait_ratio =
        std::max(max_wait_ratio, static_cast<double>(t.finish_step - t.arrival_step) / bound);
  }
  // Lagging readers slow their own requests and so what waits behind them: no wait bound then.
  if (!GetParam().lagging_readers) {
    EXPECT_EQ(max_wait_ratio_violations, 0);
  }
  EXPECT_EQ(num_held_steps > 0, GetParam().lagging_readers);
  EXPECT_GT(num_aborted, 0);
  if (GetParam().policy == AdmissionPolicy::kOptimistic) {
    EXPECT_GT(stats.num_preemptions_total, 0) << "tight memory must force preemptions";
  } else {
    EXPECT_EQ(stats.num_preemptions_total, 0) << "reserve never preempts";
  }
  EXPECT_LE(max_token_layers, budget);
  std::cout << to_string(GetParam().policy)
            << (GetParam().layered_prefill ? "" : " (whole prefills)") << " seed "
            << GetParam().seed << ": " << tracked.size() << " requests, " << num_refused
            << " refused (queue full), " << num_aborted << " aborted, "
            << stats.num_preemptions_total << " preemptions, " << step << " steps, max step "
            << max_token_layers << "/" << budget << " token-layers, worst wait " << max_wait_ratio
            << " of the bound, " << num_held_steps << " held request-steps\n";
}

INSTANTIATE_TEST_SUITE_P(Policies, EngineRandomTest,
                         ::testing::Values(Case{AdmissionPolicy::kReserve, 1},
                                           Case{AdmissionPolicy::kReserve, 2},
                                           Case{AdmissionPolicy::kOptimistic, 1},
                                           Case{AdmissionPolicy::kOptimistic, 2},
                                           Case{AdmissionPolicy::kOptimistic, 3},
                                           Case{AdmissionPolicy::kOptimistic, 4, false},
                                           Case{AdmissionPolicy::kReserve, 5, true, true},
                                           Case{AdmissionPolicy::kOptimistic, 6, true, true}));

// The serving shape: run() on its own thread, adds and aborts from two client threads.
TEST(EngineThreadTest, RunOnOwnerThreadWithConcurrentClients) {
  HarnessOptions options;
  options.config.policy = AdmissionPolicy::kOptimistic;
  options.config.max_waiting = 1000;
  options.num_pages = 96;
  Harness h(options);
  std::thread owner([&] { h.engine->run(); });
  auto client = [&](int offset, std::vector<AddResult>& out) {
    for (int i = 0; i < 100; ++i) {
      RequestParams p;
      p.prompt = {1 + (i + offset) % 60, 2, 3};
      p.max_tokens = 1 + i % 9;
      p.sampling.temperature = 0.0f;
      out.push_back(h.engine->add(p));
      if (i % 10 == 0) h.engine->abort(out.back().id);
    }
  };
  std::vector<AddResult> first, second;
  std::thread c1(client, 0, std::ref(first));
  std::thread c2(client, 7, std::ref(second));
  c1.join();
  c2.join();
  for (std::vector<AddResult>* results : {&first, &second}) {
    for (AddResult& r : *results) {
      ASSERT_TRUE(r.ok());
      int num_finished = 0;
      for (int tries = 0; tries < 2000 && num_finished == 0; ++tries) {
        std::optional<RequestEvent> e = r.events->wait_pop(std::chrono::milliseconds(10));
        if (e && e->kind == RequestEvent::Kind::kFinished) ++num_finished;
      }
      EXPECT_EQ(num_finished, 1) << "request " << r.id;
    }
  }
  h.engine->stop();
  owner.join();
  EXPECT_FALSE(h.engine->has_work());
  EXPECT_EQ(h.kv.num_free_pages(), h.kv.num_total_pages());
  const AddResult after = h.add({1}, 1);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error->kind, ErrorKind::kUnavailable);
}

}  // namespace
}  // namespace lightserve::scheduler
