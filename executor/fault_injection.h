// Faults injected at the executor boundary, for the reliability tests (docs/reliability.md): the
// daemon reads a plan from the environment variable LIGHTSERVE_FAULT_INJECTION and says so at
// start-up. Nothing sets it in production.
//
// A plan is a comma-separated list of KIND@STEP[xCOUNT][:MS], STEP counting execute() calls from
// 1, COUNT consecutive steps (default 1):
//   throw@5        step 5 throws std::runtime_error (a device error surfacing as an exception)
//   bad_alloc@5x3  steps 5-7 throw std::bad_alloc (an allocation that fails)
//   error@5        step 5 returns an error Status (the executor's own failure path)
//   slow@5:800     step 5 sleeps 800 ms, then runs
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "scheduler/executor.h"

namespace lightserve::executor {

struct Fault {
  enum class Kind : uint8_t { kThrow, kBadAlloc, kError, kSlow };
  Kind kind = Kind::kThrow;
  int64_t first_step = 1;
  int64_t num_steps = 1;
  int32_t slow_ms = 0;  // kSlow
};

struct FaultPlan {
  std::vector<Fault> faults;
  // Errors name the part that does not parse.
  static Result<FaultPlan> parse(std::string_view spec);
  std::string describe() const;
};

// Runs `inner`, with the plan's faults at their steps.
class FaultInjectingExecutor final : public scheduler::Executor {
 public:
  FaultInjectingExecutor(scheduler::Executor& inner, FaultPlan plan)
      : inner_(inner), plan_(std::move(plan)) {}

  int32_t vocab_size() const override { return inner_.vocab_size(); }
  int32_t max_candidates() const override { return inner_.max_candidates(); }
  Status execute(const scheduler::StepBatch& batch, scheduler::StepOutput& output) override;
  Status fork(scheduler::RequestId parent, scheduler::RequestId child,
              memory::KvAllocation& child_kv) override {
    return inner_.fork(parent, child, child_kv);
  }
  void release(scheduler::RequestId request_id) override { inner_.release(request_id); }

  int64_t num_steps() const { return num_steps_; }

 private:
  scheduler::Executor& inner_;
  FaultPlan plan_;
  int64_t num_steps_ = 0;
};

}  // namespace lightserve::executor
