// A small fork-join pool for data-parallel kernels. The calling thread takes part in the work.
// Workers spin briefly before sleeping, because decode issues hundreds of tiny parallel calls per
// token and a futex wake-up per call would dominate. Not reentrant: one parallel_for at a time,
// called from one thread.
//
// Work is split into tasks that whichever thread is free claims (an atomic counter), never dealt
// to a fixed thread: on a machine with more runnable threads than cores (a shared host, a
// Kubernetes CPU limit) a descheduled worker would otherwise hold every one of the hundreds of
// joins of a forward pass for a time slice. The caller waits only for tasks a worker has already
// claimed, and does the rest itself. Which thread runs a task never changes a result: every task
// computes its own outputs.
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

  // Runs fn(part, num_threads) once for every part in [0, num_threads) and waits; parts are
  // claimed by whichever thread is free (not one per thread: a thread may run several).
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, count) into contiguous chunks of a multiple of `grain` items (about four per
  // thread, so a late thread costs little) and runs fn(begin, end) on each, in any thread.
  void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop();
  // Runs task(i) for every i in [0, num_tasks) on the caller and the workers; returns when all
  // are done and no worker still holds the job.
  void dispatch(int64_t num_tasks, const std::function<void(int64_t)>& task);
  // Claims and runs tasks of the current job until none is left.
  void drain();

  int num_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<uint64_t> generation_{0};  // bumped once per job
  std::atomic<uint64_t> closed_{0};      // the last generation whose job takes no new worker
  std::atomic<int> active_{0};           // workers inside the current job
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<int> sleepers_{0};
};

}  // namespace lightserve::kernels::cpu
