// A small fork-join pool for data-parallel kernels. The calling thread takes part in the work.
// Workers spin briefly before sleeping, because decode issues hundreds of tiny parallel calls per
// token and a futex wake-up per call would dominate. Not reentrant: one parallel_for at a time,
// called from one thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lightserve::kernels::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // total threads including the caller; ≥ 1
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs fn(thread_index, num_threads) on every thread (the caller is index 0) and waits.
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, count) into contiguous chunks, at least `grain` items each, one per thread,
  // and runs fn(begin, end) on them.
  void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<int> sleepers_{0};
};

}  // namespace lightserve::kernels::cpu
