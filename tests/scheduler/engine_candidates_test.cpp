// The engine asks its executor for a row's best candidates instead of the whole row exactly when
// every sampler that reads the row reads no more (SchedulerConfig::candidate_sampling,
// Sampler::candidates_needed), and the tokens are the same with it on and off: greedy and seeded
// temperature / top-k / top-p / min-p requests, n > 1 groups sharing a prefill, preemption, in
// batches mixed with logprobs, prompt logprobs, penalties, logit bias and min_tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "tests/scheduler/engine_harness.h"

namespace lightserve::scheduler::testing {
namespace {

RequestParams request(std::vector<int32_t> prompt, float temperature, int32_t top_k,
                      uint64_t seed) {
  RequestParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = 16;
  p.sampling.temperature = temperature;
  p.sampling.top_k = top_k;
  p.sampling.top_p = 1.0f;
  p.sampling.min_p = 0.0f;
  p.sampling.seed = seed;
  return p;
}

// A mixed workload: what each request is, and the params of each group (size 1: a single request).
std::vector<std::vector<RequestParams>> workload() {
  std::vector<std::vector<RequestParams>> groups;
  auto single = [&](RequestParams p) { groups.push_back({std::move(p)}); };
  single(request({3, 4, 5}, 0.0f, 0, 1));  // greedy: 1 candidate
  single(request({6, 7}, 0.9f, 5, 2));     // top-k
  RequestParams top_p = request({8, 9, 10, 11}, 1.2f, 12, 3);
  top_p.sampling.top_p = 0.8f;
  single(top_p);
  RequestParams min_p = request({12}, 0.7f, 16, 4);
  min_p.sampling.min_p = 0.3f;
  single(min_p);
  single(request({13, 14}, 0.8f, 0, 5));  // top-k off: the whole row
  RequestParams penalized = request({15, 16, 17}, 0.8f, 8, 6);
  penalized.sampling.repetition_penalty = 1.3f;
  single(penalized);
  RequestParams biased = request({18}, 0.0f, 0, 7);
  biased.sampling.logit_bias = {{5, 3.0f}};
  single(biased);
  RequestParams with_logprobs = request({19, 20}, 0.9f, 6, 8);
  with_logprobs.logprobs = 2;
  single(with_logprobs);
  RequestParams prompt_logprobs = request({21, 22, 23, 24}, 0.0f, 0, 9);
  prompt_logprobs.prompt_logprobs = 1;
  single(prompt_logprobs);
  RequestParams min_tokens = request({25, 26}, 0.9f, 7, 10);
  min_tokens.sampling.min_tokens = 4;  // EOS (0) blocked while the output is short
  single(min_tokens);
  std::vector<RequestParams> group;  // n = 3 of one prompt: one shared prefill
  for (uint64_t i = 0; i < 3; ++i) group.push_back(request({27, 28, 29}, 1.0f, 4, 100 + i));
  groups.push_back(group);
  group.clear();  // a group whose second sample wants logprobs: the shared row goes whole
  for (uint64_t i = 0; i < 2; ++i) group.push_back(request({30, 31}, 1.0f, 4, 200 + i));
  group[1].logprobs = 1;
  groups.push_back(group);
  group.clear();  // greedy parent, top-k fork: the row's best 9 serve both
  group.push_back(request({32, 33}, 0.0f, 0, 300));
  group.push_back(request({32, 33}, 0.6f, 9, 301));
  groups.push_back(group);
  return groups;
}

struct Outputs {
  std::vector<std::vector<int32_t>> tokens;  // per request, in workload order
  std::vector<std::vector<float>> logprobs;  // the sampled tokens' logprobs, where asked
  EngineStats stats;
  std::vector<std::vector<FakeExecutor::EntryRecord>> steps;
};

Outputs run_workload(bool candidate_sampling, int32_t num_pages) {
  HarnessOptions options;
  options.config.candidate_sampling = candidate_sampling;
  options.config.max_running = 6;
  options.config.max_waiting = 32;
  options.config.growth_tokens = 4;
  options.config.policy = AdmissionPolicy::kOptimistic;  // few pages: preemption and recompute
  options.num_pages = num_pages;
  options.model.varied_logits = true;
  options.model.eos_probability = 0.04;
  Harness h(options);
  std::vector<std::shared_ptr<EventStream>> streams;
  for (std::vector<RequestParams>& group : workload()) {
    AddGroupResult added = h.engine->add_group(group);
    EXPECT_TRUE(added.ok()) << added.error->message;
    for (AddResult& m : added.members) streams.push_back(m.events);
  }
  while (h.engine->has_work()) h.engine->step();
  Outputs r;
  for (auto& stream : streams) {
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    for (RequestEvent& e : stream->drain()) {
      if (e.kind == RequestEvent::Kind::kToken) tokens.push_back(e.token_id);
      if (e.kind == RequestEvent::Kind::kFinished) tokens.push_back(-100 - e.token_id);
      if (e.logprobs) logprobs.push_back(e.logprobs->logprob);
    }
    r.tokens.push_back(tokens);
    r.logprobs.push_back(logprobs);
  }
  r.stats = h.engine->stats();
  r.steps = h.executor.steps();
  return r;
}

TEST(EngineCandidates, SameTokensWithCandidatesOnAndOff) {
  for (const int32_t num_pages : {256, 40}) {
    SCOPED_TRACE(num_pages == 40 ? "short of pages: preemptions" : "room for all");
    const Outputs on = run_workload(true, num_pages);
    const Outputs off = run_workload(false, num_pages);
    EXPECT_EQ(on.tokens, off.tokens);
    EXPECT_EQ(on.logprobs, off.logprobs);
    EXPECT_EQ(on.stats.num_forks_total, off.stats.num_forks_total);
    if (num_pages == 40) {
      EXPECT_GT(on.stats.num_preemptions_total, 0);
    }
    // Both kinds of rows ran with it on; none came back reduced with it off.
    EXPECT_GT(on.stats.num_candidate_rows_total, 0);
    EXPECT_GT(on.stats.num_whole_rows_total, 0);
    EXPECT_EQ(off.stats.num_candidate_rows_total, 0);
    EXPECT_EQ(off.stats.num_whole_rows_total,
              on.stats.num_whole_rows_total + on.stats.num_candidate_rows_total);
    // The seeds drew different tokens (the identity is not between constant outputs).
    EXPECT_NE(on.tokens[10], on.tokens[11]);
  }
}

// What request `id`'s rows were asked as, in order (its entries that ran the last layer).
std::vector<int32_t> asked(const Outputs& r, RequestId id, int32_t num_layers) {
  std::vector<int32_t> ks;
  for (const auto& step : r.steps) {
    for (const FakeExecutor::EntryRecord& e : step) {
      if (e.id == id && e.layer_end == num_layers) ks.push_back(e.num_candidates);
    }
  }
  return ks;
}

TEST(EngineCandidates, EachRowAsksWhatItsSamplersRead) {
  const Outputs on = run_workload(true, 256);
  const int32_t layers = FakeExecutor::Options().num_layers;
  // Request ids follow the workload's order (1, 2, ...); a group's forks sample from their
  // parent's prefill row and then ask for their own rows.
  auto all = [](const std::vector<int32_t>& ks, int32_t k) {
    return !ks.empty() && std::all_of(ks.begin(), ks.end(), [&](int32_t v) { return v == k; });
  };
  EXPECT_TRUE(all(asked(on, 1, layers), 1));   // greedy
  EXPECT_TRUE(all(asked(on, 2, layers), 5));   // top-k 5
  EXPECT_TRUE(all(asked(on, 3, layers), 12));  // top-k 12 with top-p
  EXPECT_TRUE(all(asked(on, 4, layers), 16));  // top-k 16 with min-p: the cap of the fake
  EXPECT_TRUE(all(asked(on, 5, layers), 0));   // top-k off
  EXPECT_TRUE(all(asked(on, 6, layers), 0));   // repetition penalty
  EXPECT_TRUE(all(asked(on, 7, layers), 0));   // logit bias
  EXPECT_TRUE(all(asked(on, 8, layers), 0));   // logprobs
  // Prompt logprobs: the prefill row goes whole (its entry fills them), the decodes are greedy.
  const std::vector<int32_t> prompt_logprobs = asked(on, 9, layers);
  ASSERT_GE(prompt_logprobs.size(), 2u);
  EXPECT_EQ(prompt_logprobs[0], 0);
  EXPECT_TRUE(all({prompt_logprobs.begin() + 1, prompt_logprobs.end()}, 1));
  // min_tokens 4: EOS is blocked (the row read whole) for the first four tokens only.
  const std::vector<int32_t> min_tokens = asked(on, 10, layers);
  ASSERT_GE(min_tokens.size(), 5u);
  EXPECT_EQ(std::vector<int32_t>(min_tokens.begin(), min_tokens.begin() + 4),
            std::vector<int32_t>(4, 0));
  EXPECT_TRUE(all({min_tokens.begin() + 4, min_tokens.end()}, 7));
  EXPECT_TRUE(all(asked(on, 11, layers), 4));  // the group's parent (its forks: 12, 13)
  EXPECT_TRUE(all(asked(on, 12, layers), 4));
  // The second group: the parent's prefill row serves a fork with logprobs: whole; then its
  // decodes ask 4 and the fork's rows go whole.
  const std::vector<int32_t> parent = asked(on, 14, layers);
  ASSERT_GE(parent.size(), 2u);
  EXPECT_EQ(parent[0], 0);
  EXPECT_TRUE(all({parent.begin() + 1, parent.end()}, 4));
  EXPECT_TRUE(all(asked(on, 15, layers), 0));
  // The third: a greedy parent's prefill row asks for its top-k fork's 9, then 1 for itself.
  const std::vector<int32_t> greedy_parent = asked(on, 16, layers);
  ASSERT_GE(greedy_parent.size(), 2u);
  EXPECT_EQ(greedy_parent[0], 9);
  EXPECT_TRUE(all({greedy_parent.begin() + 1, greedy_parent.end()}, 1));
  EXPECT_TRUE(all(asked(on, 17, layers), 9));
}

TEST(EngineCandidates, AnExecutorWithoutCandidatesIsAskedForWholeRows) {
  HarnessOptions options;
  options.model.max_candidates = 0;
  Harness h(options);
  AddResult a = h.add({3, 4, 5}, 6);
  ASSERT_TRUE(a.ok());
  while (h.engine->has_work()) h.engine->step();
  EXPECT_EQ(h.engine->stats().num_candidate_rows_total, 0);
  EXPECT_GT(h.engine->stats().num_whole_rows_total, 0);
  for (const auto& step : h.executor.steps()) {
    for (const FakeExecutor::EntryRecord& e : step) EXPECT_EQ(e.num_candidates, 0);
  }
}

}  // namespace
}  // namespace lightserve::scheduler::testing
