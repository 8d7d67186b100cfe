// An engine over a small arena with the fakes, plus the reference ("undisturbed") generation the
// engine's outputs are compared with.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "memory/kv_manager.h"
#include "sampling/sampler.h"
#include "scheduler/engine.h"
#include "tests/scheduler/fake_executor.h"

namespace lightserve::scheduler::testing {

// 4 layers, 2 full + 2 lazy lanes; pages of 4 tokens; lazy lanes keep 2 sink + 6 window tokens.
inline memory::KvLayout small_layout() {
  Result<memory::KvLayout> layout = memory::KvLayout::for_lazy_fraction(4, 0.5, 4, 2, 6, 4);
  EXPECT_TRUE(layout.ok());
  return layout.value();
}

inline SchedulerConfig default_config() {
  SchedulerConfig c;
  c.max_context_tokens = 64;
  c.max_running = 4;
  c.max_waiting = 16;
  c.eos_token_ids = {0};
  c.audit_kv_every_step = true;
  return c;
}

struct HarnessOptions {
  int32_t num_pages = 256;
  SchedulerConfig config = default_config();
  FakeExecutor::Options model;
};

struct Harness {
  explicit Harness(HarnessOptions options = HarnessOptions())
      : kv(small_layout(), options.num_pages), executor(options.model) {
    Result<std::unique_ptr<Engine>> created =
        Engine::create(options.config, kv, executor, detokenizer, clock);
    EXPECT_TRUE(created.ok()) << (created.ok() ? "" : created.error().message);
    engine = std::move(created.value());
  }
  ~Harness() { engine.reset(); }  // before the manager it releases into

  AddResult add(std::vector<int32_t> prompt, int32_t max_tokens) {
    RequestParams p;
    p.prompt = std::move(prompt);
    p.max_tokens = max_tokens;
    p.sampling.temperature = 0.0f;
    return engine->add(std::move(p));
  }

  memory::KvManager kv;
  FakeExecutor executor;
  FakeDetokenizer detokenizer;
  FakeClock clock;
  std::unique_ptr<Engine> engine;
};

// What an undisturbed run of `params` yields: the generated ids (a stop token included) and the
// finish reason, stop strings aside.
struct Reference {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::kLength;
};

inline Reference reference_run(const FakeExecutor& model, const RequestParams& params,
                               const std::vector<int32_t>& eos_ids) {
  Reference ref;
  sampling::Sampler sampler(params.sampling);
  std::vector<int32_t> context = params.prompt;
  for (int32_t i = 0; i < params.max_tokens; ++i) {
    const std::vector<float> logits = model.logits_for(context);
    const int32_t t = sampler.sample(logits);
    ref.tokens.push_back(t);
    context.push_back(t);
    bool stop = std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), t) !=
                params.stop_token_ids.end();
    if (!params.ignore_eos) stop |= std::find(eos_ids.begin(), eos_ids.end(), t) != eos_ids.end();
    if (stop) {
      ref.reason = FinishReason::kStop;
      return ref;
    }
  }
  return ref;
}

// What one request's event stream said.
struct Outcome {
  std::vector<int32_t> tokens;  // streamed ids, then the stop token id if one ended it
  std::string text;
  int32_t num_finished = 0;
  bool event_after_finish = false;
  std::optional<RequestEvent> finish;
};

inline void collect(EventStream& stream, Outcome& out) {
  for (RequestEvent& e : stream.drain()) {
    if (out.num_finished > 0) out.event_after_finish = true;
    out.text += e.text;
    if (e.kind == RequestEvent::Kind::kToken) {
      out.tokens.push_back(e.token_id);
    } else {
      ++out.num_finished;
      if (e.token_id >= 0) out.tokens.push_back(e.token_id);
      out.finish = std::move(e);
    }
  }
}

}  // namespace lightserve::scheduler::testing
