// Shared prefill of the samples of one prompt (Engine::add_group, forks): one prefill per group,
// every sample exactly what it gives as a request of its own (seeded temperature sampling), and
// the fallbacks (parent aborted, preempted or failing, no room, executor refusing the fork) never
// hang and never leak. A random test mixes groups, aborts and preemptions with the KV audit on.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <random>
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

// n samples of one prompt: seeds seed + i, temperature 1 and no truncation (the fake's logits
// then leave every token a real chance, so different seeds give different outputs).
std::vector<RequestParams> group_of(std::vector<int32_t> prompt, int32_t n, int32_t max_tokens,
                                    uint64_t seed) {
  std::vector<RequestParams> group;
  for (int32_t i = 0; i < n; ++i) {
    RequestParams p;
    p.prompt = prompt;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.sampling.temperature = 1.0f;
    p.sampling.top_k = 0;
    p.sampling.top_p = 1.0f;
    p.sampling.min_p = 0.0f;
    p.sampling.seed = seed + static_cast<uint64_t>(i);
    group.push_back(std::move(p));
  }
  return group;
}

int32_t count_prefill_entries(const testing::FakeExecutor& executor, int32_t num_layers) {
  int32_t n = 0;
  for (const auto& step : executor.steps()) {
    for (const auto& e : step) n += e.prefill && e.layer_end == num_layers;
  }
  return n;
}

struct GroupRun {
  std::vector<Outcome> outcomes;
  EngineStats stats;
  int32_t num_prefills = 0;
  int64_t num_forks = 0;
};

GroupRun run_group(HarnessOptions options, const std::vector<RequestParams>& group,
                   int abort_member_after_step = -1, int abort_member = 0,
                   bool fail_forks = false) {
  Harness h(options);
  h.executor.fail_forks(fail_forks);
  AddGroupResult added = h.engine->add_group(group);
  EXPECT_TRUE(added.ok());
  GroupRun run;
  run.outcomes.resize(group.size());
  for (int step = 0; h.engine->has_work(); ++step) {
    if (step == abort_member_after_step) h.engine->abort(added.members[abort_member].id);
    h.engine->step();
    EXPECT_LT(step, 10000) << "no progress";
    if (step >= 10000) break;
  }
  for (size_t i = 0; i < group.size(); ++i) collect(*added.members[i].events, run.outcomes[i]);
  run.stats = h.engine->stats();
  run.num_prefills = count_prefill_entries(h.executor, h.kv.layout().num_layers);
  run.num_forks = h.executor.num_forks();
  EXPECT_EQ(h.kv.num_free_pages(), h.kv.num_total_pages());
  EXPECT_EQ(h.executor.num_live_states(), 0u);
  return run;
}

void expect_matches_separate_runs(const GroupRun& run, const std::vector<RequestParams>& group,
                                  const testing::FakeExecutor& model, int skip = -1) {
  for (size_t i = 0; i < group.size(); ++i) {
    if (static_cast<int>(i) == skip) continue;
    ASSERT_EQ(run.outcomes[i].num_finished, 1) << "sample " << i;
    const testing::Reference ref = reference_run(model, group[i], {0});
    EXPECT_EQ(run.outcomes[i].tokens, ref.tokens) << "sample " << i;
  }
}

TEST(EngineForkTest, OnePrefillPerGroupAndEverySampleAsIfAlone) {
  const std::vector<RequestParams> group = group_of({5, 9, 12, 7, 30, 2, 8, 8, 41}, 4, 12, 77);
  HarnessOptions options;
  const GroupRun shared = run_group(options, group);
  testing::FakeExecutor model(options.model);
  expect_matches_separate_runs(shared, group, model);
  EXPECT_EQ(shared.num_prefills, 1);
  EXPECT_EQ(shared.num_forks, 3);
  EXPECT_EQ(shared.stats.num_forks_total, 3);
  EXPECT_EQ(shared.stats.num_prefill_tokens_total, 9);     // T, not n · T
  EXPECT_EQ(shared.stats.num_prompt_tokens_total, 4 * 9);  // every request's prompt
  EXPECT_EQ(shared.stats.num_generated_tokens_total, 4 * 12);
  // The samples differ from each other (else the identity above would prove little).
  EXPECT_NE(shared.outcomes[0].tokens, shared.outcomes[1].tokens);

  options.config.share_group_prefill = false;
  const GroupRun separate = run_group(options, group);
  expect_matches_separate_runs(separate, group, model);
  EXPECT_EQ(separate.num_prefills, 4);
  EXPECT_EQ(separate.num_forks, 0);
  EXPECT_EQ(separate.stats.num_prefill_tokens_total, 4 * 9);
}

TEST(EngineForkTest, OnlyMembersWithTheFirstsPromptAndFootprintFork) {
  std::vector<RequestParams> group = group_of({5, 9, 12}, 3, 4, 1);
  group[2].prompt = {5, 9, 13};
  const GroupRun run = run_group(HarnessOptions(), group);
  testing::FakeExecutor model((HarnessOptions().model));
  expect_matches_separate_runs(run, group, model);
  EXPECT_EQ(run.num_prefills, 2);
  EXPECT_EQ(run.num_forks, 1);
}

// The prompt takes several steps (two layers a step), so the parent can go before its forks copy.
TEST(EngineForkTest, ParentAbortedMidPrefillForksPrefillThemselves) {
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 30; ++i) prompt.push_back(1 + (i * 7) % 60);
  const std::vector<RequestParams> group = group_of(prompt, 3, 6, 11);
  const GroupRun run = run_group(HarnessOptions(), group, /*abort after step*/ 1, /*member*/ 0);
  testing::FakeExecutor model((HarnessOptions().model));
  ASSERT_EQ(run.outcomes[0].num_finished, 1);
  EXPECT_EQ(*run.outcomes[0].finish->finish_reason, FinishReason::kAbort);
  expect_matches_separate_runs(run, group, model, /*skip*/ 0);
  EXPECT_EQ(run.num_forks, 0);
  EXPECT_EQ(run.num_prefills, 2);
}

TEST(EngineForkTest, ForkAbortedWhileWaitingIsSkipped) {
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 30; ++i) prompt.push_back(1 + (i * 5) % 60);
  const std::vector<RequestParams> group = group_of(prompt, 3, 6, 21);
  const GroupRun run = run_group(HarnessOptions(), group, 1, /*member*/ 1);
  testing::FakeExecutor model((HarnessOptions().model));
  EXPECT_EQ(*run.outcomes[1].finish->finish_reason, FinishReason::kAbort);
  EXPECT_TRUE(run.outcomes[1].tokens.empty());
  expect_matches_separate_runs(run, group, model, 1);
  EXPECT_EQ(run.num_forks, 1);
  EXPECT_EQ(run.num_prefills, 1);
}

TEST(EngineForkTest, ExecutorRefusingTheForkFallsBackToOwnPrefill) {
  const std::vector<RequestParams> group = group_of({3, 4, 5, 6}, 3, 5, 5);
  const GroupRun run = run_group(HarnessOptions(), group, -1, 0, /*fail_forks*/ true);
  testing::FakeExecutor model((HarnessOptions().model));
  expect_matches_separate_runs(run, group, model);
  EXPECT_EQ(run.num_forks, 2);  // tried
  EXPECT_EQ(run.stats.num_forks_total, 0);
  EXPECT_EQ(run.num_prefills, 3);
}

TEST(EngineForkTest, NoRoomOrNoSlotAtTheParentsPrefillMeansOwnPrefillLater) {
  const std::vector<RequestParams> group = group_of({3, 4, 5, 6, 7, 8, 9, 10}, 4, 8, 9);
  testing::FakeExecutor model((HarnessOptions().model));
  HarnessOptions one_slot;
  one_slot.config.max_running = 1;
  const GroupRun serial = run_group(one_slot, group);
  expect_matches_separate_runs(serial, group, model);
  EXPECT_EQ(serial.stats.num_forks_total, 0);
  EXPECT_EQ(serial.num_prefills, 4);

  // Room for two requests of 16 tokens (4 lanes · 4 pages each) in reserve mode: one fork fits.
  HarnessOptions tight;
  tight.num_pages = 32;
  const GroupRun two = run_group(tight, group);
  expect_matches_separate_runs(two, group, model);
  EXPECT_EQ(two.stats.num_forks_total, 1);
  EXPECT_EQ(two.num_prefills, 3);
}

TEST(EngineForkTest, GroupIsRefusedWholeWhenTheQueueCannotHoldIt) {
  HarnessOptions options;
  options.config.max_waiting = 3;
  Harness h(options);
  const AddGroupResult added = h.engine->add_group(group_of({1, 2}, 4, 2, 1));
  ASSERT_FALSE(added.ok());
  EXPECT_EQ(added.error->kind, ErrorKind::kResourceExhausted);
  EXPECT_TRUE(added.members.empty());
  EXPECT_FALSE(h.engine->has_work());
  EXPECT_TRUE(h.engine->add_group(group_of({1, 2}, 3, 2, 1)).ok());
  std::vector<RequestParams> bad = group_of({1, 2}, 2, 2, 1);
  bad[1].max_tokens = 0;
  const AddGroupResult refused = h.engine->add_group(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error->kind, ErrorKind::kInvalidArgument);
}

// Random groups (n in 1..5, some members with another prompt), random aborts of any member at any
// time, tight memory under both policies (optimistic preempts, forks included): every member
// finishes exactly once with its separate run's output (a prefix when aborted), the KV audit
// (KvManager::check_invariants) passes after every step, and nothing leaks.
struct RandomCase {
  AdmissionPolicy policy;
  uint32_t seed;
};
class EngineForkRandomTest : public ::testing::TestWithParam<RandomCase> {};

TEST_P(EngineForkRandomTest, EveryMemberFinishesWithItsSeparateOutput) {
  constexpr int kNumGroups = 1500;
  HarnessOptions options;
  options.num_pages = 120;
  options.config.policy = GetParam().policy;
  options.config.max_running = 6;
  options.config.max_waiting = 30;
  options.config.growth_tokens = 2;
  options.config.audit_kv_every_step = true;
  options.model.eos_probability = 0.05;
  Harness h(options);
  std::mt19937 rng(GetParam().seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  struct Member {
    RequestParams params;
    AddResult added;
    Outcome outcome;
    bool aborted = false;
  };
  std::map<RequestId, Member> members;
  std::vector<RequestId> alive;
  int num_groups = 0;
  int64_t step = 0;
  while (num_groups < kNumGroups || h.engine->has_work()) {
    if (num_groups < kNumGroups && uniform(0, 5) == 0) {
      std::vector<int32_t> prompt;
      const int32_t len = uniform(1, 36);
      for (int32_t i = 0; i < len; ++i) prompt.push_back(uniform(1, 63));
      std::vector<RequestParams> group =
          group_of(prompt, uniform(1, 5), uniform(1, 16), static_cast<uint64_t>(uniform(0, 1000)));
      for (RequestParams& p : group) {
        p.ignore_eos = uniform(0, 3) == 0;
        if (uniform(0, 7) == 0) p.prompt.back() = uniform(1, 63);
      }
      AddGroupResult added = h.engine->add_group(group);
      ++num_groups;
      if (added.ok()) {
        for (size_t i = 0; i < group.size(); ++i) {
          alive.push_back(added.members[i].id);
          members[added.members[i].id] = Member{group[i], std::move(added.members[i]), {}, false};
        }
      } else {
        EXPECT_EQ(added.error->kind, ErrorKind::kResourceExhausted);
      }
    }
    if (!alive.empty() && uniform(0, 9) == 0) {
      const RequestId id = alive[static_cast<size_t>(uniform(0, int(alive.size()) - 1))];
      members.at(id).aborted = true;
      h.engine->abort(id);
    }
    h.engine->step();
    ++step;
    for (auto it = alive.begin(); it != alive.end();) {
      Member& m = members.at(*it);
      collect(*m.added.events, m.outcome);
      it = m.outcome.num_finished > 0 ? alive.erase(it) : it + 1;
    }
    ASSERT_LT(step, 400000) << "no progress";
  }
  EXPECT_EQ(h.kv.num_free_pages(), h.kv.num_total_pages());
  EXPECT_EQ(h.kv.num_live_allocations(), 0);
  EXPECT_EQ(h.executor.num_live_states(), 0u);
  int num_aborted = 0;
  for (auto& [id, m] : members) {
    collect(*m.added.events, m.outcome);
    ASSERT_EQ(m.outcome.num_finished, 1) << "request " << id;
    const testing::Reference ref = reference_run(h.executor, m.params, {0});
    if (*m.outcome.finish->finish_reason == FinishReason::kAbort) {
      EXPECT_TRUE(m.aborted);
      ++num_aborted;
      ASSERT_LE(m.outcome.tokens.size(), ref.tokens.size()) << "request " << id;
      EXPECT_TRUE(std::equal(m.outcome.tokens.begin(), m.outcome.tokens.end(), ref.tokens.begin()))
          << "request " << id;
    } else {
      EXPECT_EQ(m.outcome.tokens, ref.tokens) << "request " << id;
    }
  }
  const EngineStats stats = h.engine->stats();
  EXPECT_GT(stats.num_forks_total, 100);
  EXPECT_GT(num_aborted, 0);
  if (GetParam().policy == AdmissionPolicy::kOptimistic) {
    EXPECT_GT(stats.num_preemptions_total, 0);
  }
  std::cout << to_string(GetParam().policy) << " seed " << GetParam().seed << ": " << members.size()
            << " members, " << stats.num_forks_total << " forks, " << num_aborted << " aborted, "
            << stats.num_preemptions_total << " preemptions, " << stats.num_prefill_tokens_total
            << " prefill / " << stats.num_prompt_tokens_total << " prompt tokens, " << step
            << " steps\n";
}

INSTANTIATE_TEST_SUITE_P(Policies, EngineForkRandomTest,
                         ::testing::Values(RandomCase{AdmissionPolicy::kReserve, 1},
                                           RandomCase{AdmissionPolicy::kOptimistic, 2},
                                           RandomCase{AdmissionPolicy::kOptimistic, 3}));

}  // namespace
}  // namespace lightserve::scheduler
