// Sampling from a row's best candidates (SchedulerConfig::candidate_sampling, `--device-sampling`)
// through the engine with the real model and executor::ModelExecutor: one batch mixing greedy and
// seeded temperature / top-k / top-p / min-p requests, an n = 3 group sharing its prefill, and
// requests that need whole rows (logprobs, prompt logprobs, penalties, logit bias, a grammar, top-k
// off) gives exactly the same tokens (and logprobs) with it on and off, under layered prefill and
// hybrid LightTransfer; with it on most rows come back as candidates
// (LlamaModel::forward_candidates over the CPU backend's topk_rows), with it off none do.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "executor/model_executor.h"
#include "model/constraint_vocabulary.h"
#include "model/kv_arena.h"
#include "model/llama_model.h"
#include "sampling/constraint.h"
#include "scheduler/clock.h"
#include "scheduler/engine.h"
#include "tests/support/shared_model.h"

namespace lightserve::executor {
namespace {

class ZeroClock final : public scheduler::Clock {
 public:
  double now_seconds() const override { return 0.0; }
};

struct Generated {
  std::vector<std::vector<int32_t>> tokens;  // per request, in the order added
  std::vector<std::vector<float>> logprobs;  // sampled tokens' logprobs, where asked
  std::vector<size_t> prompt_logprobs;       // how many prompt logprobs each first event held
  scheduler::EngineStats stats;
};

class DeviceSampling : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = model::testing::shared_model();
    if (model_ == nullptr)
      GTEST_SKIP() << "model not found: " << model::gguf_testing::test_model_path();
    lt_.sink = 4;
    lt_.window = 16;  // the longer prompts have lazy layers cut to it
  }

  std::vector<int32_t> tokens(const std::string& text) const {
    const auto& tok = model_->tokenizer();
    return tok.encode(text, tok.add_bos_token(), true);
  }

  scheduler::RequestParams request(const std::string& prompt, float temperature, int32_t top_k,
                                   uint64_t seed) const {
    scheduler::RequestParams p;
    p.prompt = tokens(prompt);
    p.max_tokens = 8;
    p.sampling.temperature = temperature;
    p.sampling.top_k = top_k;
    p.sampling.top_p = 1.0f;
    p.sampling.min_p = 0.0f;
    p.sampling.seed = seed;
    return p;
  }

  // The groups of the batch (a single request is a group of one), all added before the first step.
  std::vector<std::vector<scheduler::RequestParams>> workload() const {
    const std::string story =
        "The old lighthouse keeper walked down to the harbour every morning before sunrise and "
        "counted the fishing boats.";
    std::vector<std::vector<scheduler::RequestParams>> groups;
    auto single = [&](scheduler::RequestParams p) { groups.push_back({std::move(p)}); };
    single(request("The capital of France is", 0.0f, 0, 1));  // greedy
    single(request(story + " One day", 0.9f, 40, 2));         // the default top-k
    scheduler::RequestParams top_p = request("List three colors:", 1.1f, 50, 3);
    top_p.sampling.top_p = 0.9f;
    single(top_p);
    scheduler::RequestParams min_p = request("Once upon a time", 0.8f, 64, 4);
    min_p.sampling.min_p = 0.05f;
    single(min_p);
    std::vector<scheduler::RequestParams> group;  // n = 3: one prefill, three seeds
    for (uint64_t i = 0; i < 3; ++i) group.push_back(request(story, 1.0f, 20, 10 + i));
    groups.push_back(group);
    scheduler::RequestParams with_logprobs = request("The sky is", 0.7f, 40, 5);
    with_logprobs.logprobs = 3;
    single(with_logprobs);
    scheduler::RequestParams echo = request("Water boils at", 0.0f, 0, 6);
    echo.prompt_logprobs = 2;
    single(echo);
    scheduler::RequestParams penalized = request(story, 0.8f, 40, 7);
    penalized.sampling.repetition_penalty = 1.3f;
    penalized.sampling.frequency_penalty = 0.4f;
    single(penalized);
    scheduler::RequestParams biased = request("My favourite fruit is", 0.0f, 0, 8);
    biased.sampling.logit_bias = {{tokens(" apple").back(), 4.0f}};
    single(biased);
    single(request("Numbers: 1, 2, 3,", 0.9f, 0, 9));  // top-k off
    scheduler::RequestParams constrained = request("Is the sea salty? Answer:", 0.9f, 40, 11);
    constrained.sampling.constraint = constraint_;
    single(constrained);
    return groups;
  }

  Generated run(bool candidate_sampling) {
    if (constraint_ == nullptr) {
      compiler_ = std::make_unique<sampling::ConstraintCompiler>(
          model::constraint_vocabulary(model_->tokenizer(), model_->config().vocab_size));
      auto compiled = compiler_->compile(
          {sampling::ConstraintSpec::Kind::kChoice, {}, {" yes", " no", " maybe so"}, "x"});
      EXPECT_TRUE(compiled.ok()) << compiled.error().message;
      constraint_ = compiled.value();
    }
    const int32_t context = 96, num_sequences = 14;
    auto arena = model::KvArena::create_for(model_->backend(), model_->config(), lt_, context,
                                            num_sequences);
    EXPECT_TRUE(arena.ok()) << arena.error().message;
    ModelExecutor executor(*model_, *arena.value(), lt_);
    ModelDetokenizer detokenizer(model_->tokenizer());
    ZeroClock clock;
    scheduler::SchedulerConfig config;
    config.max_context_tokens = context;
    config.max_running = num_sequences;
    config.layered_prefill = true;
    config.step_budget_token_layers =
        static_cast<int64_t>(num_sequences) * model_->config().num_layers + 8 * context;
    config.candidate_sampling = candidate_sampling;
    for (int32_t id = 0; id < model_->config().vocab_size; ++id) {
      if (model_->tokenizer().is_end_of_generation(id)) config.eos_token_ids.push_back(id);
    }
    auto engine =
        scheduler::Engine::create(config, arena.value()->manager(), executor, detokenizer, clock);
    EXPECT_TRUE(engine.ok()) << engine.error().message;
    std::vector<std::shared_ptr<scheduler::EventStream>> streams;
    for (const auto& group : workload()) {
      scheduler::AddGroupResult added = engine.value()->add_group(group);
      EXPECT_TRUE(added.ok()) << added.error->message;
      for (const scheduler::AddResult& m : added.members) streams.push_back(m.events);
    }
    while (engine.value()->has_work()) engine.value()->step();
    Generated g;
    for (const auto& stream : streams) {
      std::vector<int32_t> ids;
      std::vector<float> logprobs;
      size_t prompt_logprobs = 0;
      for (scheduler::RequestEvent& e : stream->drain()) {
        if (e.kind == scheduler::RequestEvent::Kind::kToken) ids.push_back(e.token_id);
        if (e.kind == scheduler::RequestEvent::Kind::kFinished) {
          EXPECT_FALSE(e.error.has_value()) << e.error->message;
          ids.push_back(-100 - e.token_id);  // the stop token, or -99 for none
        }
        if (e.logprobs) logprobs.push_back(e.logprobs->logprob);
        prompt_logprobs += e.prompt_logprobs.size();
      }
      g.tokens.push_back(ids);
      g.logprobs.push_back(logprobs);
      g.prompt_logprobs.push_back(prompt_logprobs);
    }
    g.stats = engine.value()->stats();
    engine.value().reset();  // gives the KV back before the executor and arena go
    return g;
  }

  model::LlamaModel* model_ = nullptr;
  model::LightTransferSettings lt_;  // online mode, f = 0.5
  std::unique_ptr<sampling::ConstraintCompiler> compiler_;
  std::shared_ptr<const sampling::CompiledConstraint> constraint_;
};

TEST_F(DeviceSampling, SameTokensWithCandidatesOnAndOff) {
  const Generated on = run(true);
  const Generated off = run(false);
  ASSERT_EQ(on.tokens.size(), 13u);
  EXPECT_EQ(on.tokens, off.tokens);
  EXPECT_EQ(on.logprobs, off.logprobs);
  EXPECT_EQ(on.prompt_logprobs, off.prompt_logprobs);
  EXPECT_EQ(on.stats.num_forks_total, 2);
  // Not a vacuous identity: most rows came back reduced with it on, none with it off; the
  // group's seeds drew different samples; logprobs and prompt logprobs were there.
  EXPECT_GT(on.stats.num_candidate_rows_total, on.stats.num_whole_rows_total);
  EXPECT_GT(on.stats.num_whole_rows_total, 0);
  EXPECT_EQ(off.stats.num_candidate_rows_total, 0);
  EXPECT_TRUE(on.tokens[4] != on.tokens[5] || on.tokens[5] != on.tokens[6]);
  EXPECT_FALSE(on.logprobs[7].empty());
  EXPECT_GT(on.prompt_logprobs[8], 0u);
  for (const auto& ids : on.tokens) EXPECT_GE(ids.size(), 2u);
}

}  // namespace
}  // namespace lightserve::executor
