// The n parallel samples of one request (OpenAI's `n`), as both frontends read them: n sibling
// requests in the engine, the same prompt and settings with seeds seed, seed + 1, ..., read as
// one stream of events tagged with the sample's index. n = 1 is one request, read as before.
//
// Siblings copy the prepared params, so a constraint (sampling/constraint.h) is compiled once and
// shared; each sibling's Sampler holds its own matcher, so every sample is held to it on its own.
//
// The siblings go to the engine as one group (scheduler::Engine::add_group): the prompt is
// prefilled once, by sibling 0; the others copy its KV and sample their first token from its
// logits (forks), so each sample is exactly what it would be as a request of its own.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <variant>
#include <vector>

#include "scheduler/events.h"
#include "scheduler/request.h"
#include "serving/serving_core.h"

namespace lightserve::frontends {

struct IndexedEvent {
  int32_t index = 0;  // the sample: choices[index]
  scheduler::RequestEvent event;
};

class GenerationGroup {
 public:
  // Submits `n` >= 1 copies of `params` (sibling i: seed + i; request tag TAG.i when n > 1), all
  // or none: when the engine refuses the group, its error is returned.
  static std::variant<std::shared_ptr<GenerationGroup>, scheduler::EngineError> submit(
      serving::ServingCore& engine, const scheduler::RequestParams& params, int32_t n);

  ~GenerationGroup();  // aborts the siblings not finished (a reader that goes away)

  int32_t size() const { return static_cast<int32_t>(members_.size()); }
  // Runs after every later event of any sibling, on the engine thread (EventStream's rules).
  void set_listener(const std::function<void()>& listener);
  // The next event of some sibling, taking them in turn; nullopt when none is ready.
  std::optional<IndexedEvent> try_pop();
  // Every sibling's kFinished has been popped.
  bool finished() const;
  // Aborts the siblings whose finish has not been popped (the client went away, or one sibling
  // failed and the answer is that error). Idempotent; any thread.
  void abort();

 private:
  struct Member {
    scheduler::RequestId id = 0;
    std::shared_ptr<scheduler::EventStream> events;
    bool finished = false;  // its kFinished was popped
  };
  explicit GenerationGroup(serving::ServingCore& engine) : engine_(engine) {}

  serving::ServingCore& engine_;
  mutable std::mutex mutex_;  // guards the members' `finished` and next_
  std::vector<Member> members_;
  size_t next_ = 0;  // the sibling try_pop looks at first
};

}  // namespace lightserve::frontends
