// Prompt logprobs (echo with logprobs) against transformers: the engine's
// RequestParams::prompt_logprobs for the tiny random Llama-3.1 hf_tiny_llama31/f32 (generated into
// the build tree by tests/fixtures/make_test_fixtures.cpp)
// equal log_softmax of transformers' f32 logits (tests/golden/prompt_logprobs.json, written by
// scripts/goldens/prompt_logprobs_goldens.py) for every prompt token, and the top alternatives
// name the same tokens where transformers' own gaps are wider than the tolerance.
//
// Tolerance 1e-2: tests/model/hf_golden_test.cpp holds this model's logits within 5e-3 of
// transformers' (our KV cache is f16); a logprob is a logit minus the log-sum-exp of the row, and
// each of the two is off by at most that much.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "executor/model_executor.h"
#include "kernels/backend.h"
#include "model/kv_arena.h"
#include "model/llama_model.h"
#include "scheduler/clock.h"
#include "scheduler/engine.h"

namespace lightserve::executor {
namespace {

using nlohmann::json;

class ZeroClock final : public scheduler::Clock {
 public:
  double now_seconds() const override { return 0.0; }
};

TEST(PromptLogprobsGolden, MatchTransformers) {
  const std::string golden_dir = LIGHTSERVE_GOLDEN_DIR;
  std::ifstream in(golden_dir + "/prompt_logprobs.json");
  ASSERT_TRUE(in) << "missing tests/golden/prompt_logprobs.json";
  std::stringstream text;
  text << in.rdbuf();
  const json golden = json::parse(text.str());
  std::string why;
  auto backend = kernels::make_backend("cpu", 1, &why);
  ASSERT_NE(backend, nullptr) << why;
  auto loaded =
      model::LlamaModel::load(model::ModelSource(std::string(LIGHTSERVE_FIXTURE_DIR) + "/" +
                                                 golden["model"].get<std::string>()),
                              *backend);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  model::LlamaModel& llama = *loaded.value();
  const int32_t top = golden["top"].get<int32_t>();
  constexpr float kTolerance = 1e-2f;

  for (const json& run : golden["runs"]) {
    const auto ids = run["ids"].get<std::vector<int32_t>>();
    const int32_t context = static_cast<int32_t>(ids.size()) + 1;
    model::LightTransferSettings lt;
    lt.mode = model::LtMode::kFull;
    auto arena = model::KvArena::create_for(llama.backend(), llama.config(), lt, context);
    ASSERT_TRUE(arena.ok()) << arena.error().message;
    ModelExecutor executor(llama, *arena.value(), lt);
    ModelDetokenizer detokenizer(llama.tokenizer());
    ZeroClock clock;
    scheduler::SchedulerConfig config;
    config.max_context_tokens = context;
    config.max_running = 1;
    config.audit_kv_every_step = true;
    auto engine =
        scheduler::Engine::create(config, arena.value()->manager(), executor, detokenizer, clock);
    ASSERT_TRUE(engine.ok()) << engine.error().message;
    scheduler::RequestParams p;
    p.prompt = ids;
    p.max_tokens = 1;
    p.prompt_logprobs = top;
    scheduler::AddResult added = engine.value()->add(p);
    ASSERT_TRUE(added.ok()) << added.error->message;
    while (engine.value()->has_work()) engine.value()->step();
    const std::vector<scheduler::RequestEvent> events = added.events->drain();
    ASSERT_FALSE(events.empty());
    const std::vector<scheduler::TokenLogprobs>& got = events.front().prompt_logprobs;
    const json& want = run["prompt_logprobs"];
    ASSERT_EQ(got.size(), want.size());
    float worst = 0;
    for (size_t t = 0; t < got.size(); ++t) {
      const json& w = want[t];
      worst = std::max(worst, std::fabs(got[t].logprob - w["logprob"].get<float>()));
      const auto top_ids = w["top_ids"].get<std::vector<int32_t>>();
      const auto top_lp = w["top_logprobs"].get<std::vector<float>>();
      ASSERT_EQ(got[t].top.size(), top_ids.size());
      for (size_t k = 0; k < top_ids.size(); ++k) {
        EXPECT_NEAR(got[t].top[k].logprob, top_lp[k], kTolerance) << "token " << t + 1;
        // The same id where transformers' own neighbours (both known: not the last) are farther
        // apart than twice the tolerance.
        const bool clear = (k == 0 || top_lp[k - 1] - top_lp[k] > 2 * kTolerance) &&
                           (k + 1 < top_ids.size() && top_lp[k] - top_lp[k + 1] > 2 * kTolerance);
        if (clear) {
          EXPECT_EQ(got[t].top[k].token_id, top_ids[k]) << "token " << t + 1;
        }
      }
    }
    EXPECT_LT(worst, kTolerance);
    std::printf("[ golden   ] %zu prompt tokens: max |logprob error| %.2e\n", ids.size(),
                static_cast<double>(worst));
    engine.value().reset();
  }
}

}  // namespace
}  // namespace lightserve::executor
