#include "sampling/mask_workers.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace lightserve::sampling {
namespace {

int64_t thread_cpu_nanoseconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

std::atomic<int64_t> worker_cpu_nanoseconds{0};

// A fixed set of threads over one FIFO queue. The destructor runs every queued job, then joins.
class MaskWorkers {
 public:
  explicit MaskWorkers(int num_threads) {
    for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~MaskWorkers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and nothing left to run
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      const int64_t start = thread_cpu_nanoseconds();
      job();
      worker_cpu_nanoseconds += thread_cpu_nanoseconds() - start;
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

int default_threads() {
  return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
}

// The workers (null: none) behind a mutex; a shared_ptr so that a submit racing a resize keeps
// the pool it picked alive. Created on first use, so a process that never constrains starts none.
struct Pool {
  std::mutex mutex;
  int num_threads = default_threads();
  std::shared_ptr<MaskWorkers> workers;
  bool started = false;
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: jobs may still be queued at exit
  return *p;
}

}  // namespace

void set_constraint_mask_threads(int num_threads) {
  std::shared_ptr<MaskWorkers> old;
  {
    std::lock_guard<std::mutex> lock(pool().mutex);
    pool().num_threads = std::max(0, num_threads);
    old = std::move(pool().workers);
    pool().started = false;
  }
  // The old workers finish what they hold (the last reference may be a submit in flight).
}

int constraint_mask_threads() {
  std::lock_guard<std::mutex> lock(pool().mutex);
  return pool().num_threads;
}

double constraint_mask_worker_cpu_seconds() {
  return 1e-9 * static_cast<double>(worker_cpu_nanoseconds.load());
}

namespace detail {

bool submit_mask_job(std::function<void()> job) {
  std::shared_ptr<MaskWorkers> workers;
  {
    std::lock_guard<std::mutex> lock(pool().mutex);
    if (!pool().started) {
      if (pool().num_threads > 0)
        pool().workers = std::make_shared<MaskWorkers>(pool().num_threads);
      pool().started = true;
    }
    workers = pool().workers;
  }
  if (!workers) return false;
  workers->submit(std::move(job));
  return true;
}

}  // namespace detail
}  // namespace lightserve::sampling
