// executor/fault_injection: the plan's grammar, and faults at exactly their steps.
#include "executor/fault_injection.h"

#include <gtest/gtest.h>

#include <chrono>
#include <new>
#include <stdexcept>

namespace lightserve::executor {
namespace {

// Counts the steps that reached it.
class CountingExecutor final : public scheduler::Executor {
 public:
  int32_t vocab_size() const override { return 7; }
  int32_t max_candidates() const override { return 5; }
  Status execute(const scheduler::StepBatch&, scheduler::StepOutput&) override {
    ++num_executed;
    return Status::Ok();
  }
  Status fork(scheduler::RequestId, scheduler::RequestId, memory::KvAllocation&) override {
    return Error{"CountingExecutor does not fork"};
  }
  void release(scheduler::RequestId) override { ++num_released; }
  int num_executed = 0, num_released = 0;
};

TEST(FaultPlan, ParsesEveryKind) {
  auto plan = FaultPlan::parse("throw@5,bad_alloc@2x3,error@9,slow@1:40");
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  ASSERT_EQ(plan.value().faults.size(), 4u);
  EXPECT_EQ(plan.value().faults[1].kind, Fault::Kind::kBadAlloc);
  EXPECT_EQ(plan.value().faults[1].first_step, 2);
  EXPECT_EQ(plan.value().faults[1].num_steps, 3);
  EXPECT_EQ(plan.value().faults[3].slow_ms, 40);
  EXPECT_EQ(plan.value().describe(),
            "throw at step 5, bad_alloc at step 2 for 3 steps, error at step 9, slow at step 1 "
            "(40 ms)");
}

TEST(FaultPlan, RefusesWhatDoesNotParseNamingIt) {
  for (const char* bad : {"", ",", "throw", "melt@3", "throw@0", "throw@x", "throw@3x0",
                          "throw@3:10", "slow@3", "slow@3:0", "error@-1"}) {
    auto plan = FaultPlan::parse(bad);
    EXPECT_FALSE(plan.ok()) << "'" << bad << "' parsed";
  }
  EXPECT_NE(FaultPlan::parse("melt@3").error().message.find("fault 'melt@3': unknown kind"),
            std::string::npos);
}

TEST(FaultInjectingExecutor, FaultsHitExactlyTheirSteps) {
  CountingExecutor inner;
  FaultInjectingExecutor faulty(inner, FaultPlan::parse("throw@2,bad_alloc@3,error@4x2").value());
  scheduler::StepBatch batch;
  scheduler::StepOutput output;
  EXPECT_TRUE(faulty.execute(batch, output).ok());                        // 1
  EXPECT_THROW((void)faulty.execute(batch, output), std::runtime_error);  // 2
  EXPECT_THROW((void)faulty.execute(batch, output), std::bad_alloc);      // 3
  EXPECT_FALSE(faulty.execute(batch, output).ok());                       // 4
  Status fifth = faulty.execute(batch, output);                           // 5
  ASSERT_FALSE(fifth.ok());
  EXPECT_EQ(fifth.message(), "injected fault at step 5");
  EXPECT_TRUE(faulty.execute(batch, output).ok());  // 6
  EXPECT_EQ(inner.num_executed, 2);                 // the faulty steps never reached it
  faulty.release(3);
  EXPECT_EQ(inner.num_released, 1);
  EXPECT_EQ(faulty.vocab_size(), 7);
  EXPECT_EQ(faulty.max_candidates(), 5);
}

TEST(FaultInjectingExecutor, ASlowStepIsSlowThenRuns) {
  CountingExecutor inner;
  FaultInjectingExecutor faulty(inner, FaultPlan::parse("slow@1:60").value());
  scheduler::StepBatch batch;
  scheduler::StepOutput output;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(faulty.execute(batch, output).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(60));
  EXPECT_EQ(inner.num_executed, 1);
}

}  // namespace
}  // namespace lightserve::executor
