#include "scheduler/capacity_scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "memory/capacity.h"
#include "memory/kv_manager.h"
#include "tests/scheduler/engine_harness.h"

namespace lightserve::scheduler {
namespace {

using testing::small_layout;

// small_layout: pages of 4 tokens; a hybrid request of T tokens holds 2 full lanes of
// ceil(T / 4) pages and 2 lazy lanes of ceil(min(T, 2 + 6) / 4) pages.
CapacityCandidate waiting(RequestId id, int64_t tokens, int64_t max_total) {
  return {id, small_layout().hybrid_footprint(), tokens, 0, max_total};
}
CapacityCandidate running(RequestId id, int64_t needed, int64_t capacity, int64_t max_total) {
  return {id, small_layout().hybrid_footprint(), needed, capacity, max_total};
}
std::vector<RequestId> admitted(const CapacityDecision& d) {
  std::vector<RequestId> ids;
  for (const auto& a : d.admit) ids.push_back(a.id);
  return ids;
}

TEST(CapacitySchedulerTest, ReserveAdmitsPromptPlusMaxTokensInOrder) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kReserve, 8, 4);
  // 10 + 6 = 16 tokens = 2·4 + 2·2 = 12 pages; then 24 tokens = 16 pages do not fit in the 8 left.
  const std::vector<CapacityCandidate> w = {waiting(1, 10, 16), waiting(2, 20, 24),
                                            waiting(3, 1, 2)};
  const CapacityDecision d = s.schedule({{}, w, 20});
  EXPECT_EQ(admitted(d), (std::vector<RequestId>{1}))
      << "request 3 would fit but must not overtake the blocked request 2 (FCFS)";
  EXPECT_EQ(d.admit[0].token_capacity, 16);
  EXPECT_EQ(d.num_free_pages, 8);
  EXPECT_TRUE(d.preempt.empty());
}

TEST(CapacitySchedulerTest, PagesAndMaxRunningLimitAdmission) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kReserve, 2, 4);
  // 4 tokens: one page in each of the 4 lanes.
  const std::vector<CapacityCandidate> w = {waiting(1, 2, 4), waiting(2, 2, 4), waiting(3, 2, 4)};
  EXPECT_EQ(admitted(s.schedule({{}, w, 7})), (std::vector<RequestId>{1})) << "7 pages";
  const std::vector<CapacityCandidate> r = {running(9, 3, 4, 4)};
  EXPECT_EQ(admitted(s.schedule({r, w, 100})), (std::vector<RequestId>{1}))
      << "max_running 2 with one running";
}

TEST(CapacitySchedulerTest, OptimisticAdmitsWithGrowthAndGrowsRunning) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 4);
  const std::vector<CapacityCandidate> r = {running(1, 9, 8, 30)};  // needs a 3rd full page
  const std::vector<CapacityCandidate> w = {waiting(2, 5, 30)};
  const CapacityDecision d = s.schedule({r, w, 16});
  ASSERT_EQ(d.grow.size(), 1u);
  EXPECT_EQ(d.grow[0].token_capacity, 13);  // 9 + growth 4: 2 more pages per full lane
  ASSERT_EQ(d.admit.size(), 1u);
  EXPECT_EQ(d.admit[0].token_capacity, 9);  // 5 + 4: 2·3 + 2·2 pages
  EXPECT_EQ(d.num_free_pages, 16 - 4 - 10);
}

TEST(CapacitySchedulerTest, OptimisticPreemptsYoungestFirstAndAdmitsNothing) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 4);
  // The oldest grows 8 -> 17 tokens: 6 more pages; none free. The youngest (3) holds 4 pages,
  // 2 holds 8.
  const std::vector<CapacityCandidate> r = {running(1, 13, 8, 40), running(2, 5, 8, 40),
                                            running(3, 3, 4, 40)};
  const std::vector<CapacityCandidate> w = {waiting(4, 1, 2)};
  const CapacityDecision d = s.schedule({r, w, 0});
  EXPECT_EQ(d.preempt, (std::vector<RequestId>{3, 2}));
  ASSERT_EQ(d.grow.size(), 1u);
  EXPECT_EQ(d.grow[0].id, 1u);
  EXPECT_TRUE(d.admit.empty()) << "a step that preempted admits nothing";
  EXPECT_EQ(d.num_free_pages, 6);
}

TEST(CapacitySchedulerTest, YoungestPreemptsItself) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 4);
  const std::vector<CapacityCandidate> r = {running(1, 4, 4, 40), running(2, 5, 4, 40)};
  const CapacityDecision d = s.schedule({r, {}, 0});
  EXPECT_EQ(d.preempt, (std::vector<RequestId>{2})) << "the older one keeps its KV";
  EXPECT_TRUE(d.grow.empty());
  EXPECT_EQ(d.num_free_pages, 4);
}

TEST(CapacitySchedulerTest, GrowthIsCappedAtPromptPlusMaxTokens) {
  const CapacityScheduler s(small_layout(), AdmissionPolicy::kOptimistic, 8, 100);
  const CapacityDecision d = s.schedule({{}, std::vector{waiting(1, 5, 7)}, 10});
  ASSERT_EQ(d.admit.size(), 1u);
  EXPECT_EQ(d.admit[0].token_capacity, 7);
}

// A mixed load at the daemon's defaults (SmolLM2-135M's 30 layers, 512 MiB, f = 0.5, sink 4 +
// window 1020, max_running 64): the loadtest datasets' chat (128 + 64), random (1024 + 128) and
// rag (7936 + 256) requests arrive two per step; each running request decodes one token a step
// and leaves after its output. The same arrivals go through the hybrid layout and through full
// attention (f = 0) over the same pages, with the real KvManager committing every decision. The
// hybrid has admitted at least as many sequences as full attention at every step, and ran more
// at once.
struct MixedRun {
  std::vector<int64_t> admitted_by_step;
  int64_t peak_running = 0;
};

MixedRun run_mixed_load(double lazy_fraction) {
  const memory::KvLayout layout =
      memory::KvLayout::for_lazy_fraction(30, lazy_fraction, 16, 4, 1020, 768).value();
  const memory::CapacityPlan plan = memory::plan_capacity(layout, int64_t{512} << 20, 8192).value();
  memory::KvManager kv(plan);
  const CapacityScheduler s(layout, AdmissionPolicy::kReserve, 64, 16);
  struct Job {
    CapacityCandidate candidate;
    int64_t output = 0;
    memory::KvAllocation allocation;
    int64_t decoded = 0;
  };
  std::mt19937 random(42);
  const std::pair<int64_t, int64_t> kinds[] = {{128, 64}, {1024, 128}, {7936, 256}};
  std::vector<std::unique_ptr<Job>> arrivals;
  for (RequestId id = 1; id <= 400; ++id) {
    const auto [input, output] = kinds[std::uniform_int_distribution<int>(0, 2)(random)];
    auto job = std::make_unique<Job>();
    job->candidate = {id, layout.hybrid_footprint(), input, 0, input + output};
    job->output = output;
    arrivals.push_back(std::move(job));
  }
  MixedRun out;
  std::vector<Job*> waiting_jobs, running_jobs;
  int64_t num_admitted = 0;
  size_t next = 0;
  for (int step = 0; step < 3000; ++step) {
    for (int i = 0; i < 2 && next < arrivals.size(); ++i)
      waiting_jobs.push_back(arrivals[next++].get());
    std::vector<CapacityCandidate> r, w;
    for (Job* j : running_jobs) r.push_back(j->candidate);
    for (Job* j : waiting_jobs) w.push_back(j->candidate);
    const CapacityDecision d = s.schedule({r, w, kv.num_free_pages()});
    EXPECT_TRUE(d.preempt.empty() && d.grow.empty());
    for (const CapacityDecision::Admit& a : d.admit) {
      Job* job = waiting_jobs.front();
      EXPECT_EQ(job->candidate.id, a.id);
      job->allocation = kv.commit(*kv.plan_admit(layout.hybrid_footprint(), a.token_capacity));
      job->candidate.token_capacity = a.token_capacity;
      running_jobs.push_back(job);
      waiting_jobs.erase(waiting_jobs.begin());
      ++num_admitted;
    }
    EXPECT_EQ(kv.num_free_pages(), d.num_free_pages);
    out.peak_running =
        std::max<int64_t>(out.peak_running, static_cast<int64_t>(running_jobs.size()));
    out.admitted_by_step.push_back(num_admitted);
    for (Job* j : running_jobs) ++j->decoded;
    std::erase_if(running_jobs, [&](Job* j) {
      if (j->decoded < j->output) return false;
      kv.release(std::move(j->allocation));
      return true;
    });
  }
  kv.check_invariants();
  return out;
}

TEST(CapacitySchedulerTest, MixedLoadHybridAdmitsAtLeastAsManyAsFullAtEveryStep) {
  const MixedRun hybrid = run_mixed_load(0.5);
  const MixedRun full = run_mixed_load(0.0);
  ASSERT_EQ(hybrid.admitted_by_step.size(), full.admitted_by_step.size());
  for (size_t step = 0; step < hybrid.admitted_by_step.size(); ++step) {
    ASSERT_GE(hybrid.admitted_by_step[step], full.admitted_by_step[step]) << "step " << step;
  }
  EXPECT_GT(hybrid.admitted_by_step.back(), full.admitted_by_step.back());
  EXPECT_GT(hybrid.peak_running, full.peak_running);
  std::printf(
      "mixed load: peak running hybrid %lld, full %lld; admitted by step 1000: %lld / %lld\n",
      static_cast<long long>(hybrid.peak_running), static_cast<long long>(full.peak_running),
      static_cast<long long>(hybrid.admitted_by_step[1000]),
      static_cast<long long>(full.admitted_by_step[1000]));
}

}  // namespace
}  // namespace lightserve::scheduler
