// The kernels' fork-join pool: every item of every call runs exactly once, on whichever thread,
// nothing runs after the call returns, and a worker that is descheduled (here: made to sleep in
// its task) no longer holds the whole call.
#include "kernels/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <thread>
#include <vector>

namespace lightserve::kernels::cpu {
namespace {

TEST(ThreadPool, ParallelForCoversEveryItemOnceInGrainAlignedChunks) {
  std::mt19937 rng(7);
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int call = 0; call < 2000; ++call) {
      const int64_t count = std::uniform_int_distribution<int64_t>(0, 700)(rng);
      const int64_t grain = std::uniform_int_distribution<int64_t>(1, 40)(rng);
      std::vector<std::atomic<int>> hits(static_cast<size_t>(count));
      std::atomic<bool> misaligned{false};
      pool.parallel_for(count, grain, [&](int64_t begin, int64_t end) {
        if (begin % grain != 0 || begin >= end || end > count) misaligned = true;
        for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      });
      ASSERT_FALSE(misaligned) << "threads " << threads << " count " << count << " grain " << grain;
      for (int64_t i = 0; i < count; ++i) {
        ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1)
            << "item " << i << " of " << count << ", threads " << threads << ", call " << call;
      }
    }
  }
}

TEST(ThreadPool, RunGivesEveryPartOnceAndNothingRunsAfterTheCallReturns) {
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  for (int call = 0; call < 5000; ++call) {
    auto parts = std::make_unique<std::atomic<int>[]>(4);
    pool.run([&](int part, int num_parts) {
      ASSERT_EQ(num_parts, 4);
      parts[static_cast<size_t>(part)].fetch_add(1);
      total.fetch_add(1);
    });
    for (int p = 0; p < 4; ++p) ASSERT_EQ(parts[static_cast<size_t>(p)].load(), 1) << call;
    // The next iteration frees `parts`: a task still running after return would touch freed
    // memory (ASan) or change the total below.
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(total.load(), 5000 * 4);
}

TEST(ThreadPool, ADescheduledWorkerHoldsBackOnlyTheChunkItHolds) {
  // Two threads; whichever runs chunk 0 sleeps 200 ms in it, as a worker preempted by the host
  // would. With the work dealt one share per thread the call would wait for that thread's whole
  // share; claimed chunks let the other thread take every other chunk meanwhile.
  ThreadPool pool(2);
  std::atomic<int> chunks{0};
  std::atomic<int> by_sleeper{0};
  thread_local bool slept = false;
  pool.parallel_for(64, 1, [&](int64_t begin, int64_t end) {
    chunks.fetch_add(1);
    if (begin == 0) {
      slept = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    } else if (slept) {
      by_sleeper.fetch_add(static_cast<int>(end - begin));
    }
  });
  EXPECT_EQ(chunks.load(), 8);      // about four chunks per thread
  EXPECT_EQ(by_sleeper.load(), 0);  // the sleeping thread claimed nothing more
}

}  // namespace
}  // namespace lightserve::kernels::cpu
