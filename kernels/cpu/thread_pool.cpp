#include "kernels/cpu/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lightserve::kernels::cpu {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// About 50–100 µs of spinning before a worker sleeps: long enough to bridge the gap between
// consecutive kernels of one forward pass, short enough not to burn a core between requests.
constexpr int kSpinIterations = 20000;

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain() {
  for (;;) {
    const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= num_tasks_) return;
    (*job_)(task);
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      cpu_relax();
      gen = generation_.load(std::memory_order_acquire);
    }
    // stop_ counts on its own: the destructor's generation bump can be taken as `seen` below by
    // a worker that had just checked stop_, which would then sleep through it for good.
    if (gen == seen && !stop_.load()) {
      std::unique_lock lock(mutex_);
      sleepers_.fetch_add(1);
      wake_.wait(lock, [&] {
        return stop_.load() || generation_.load(std::memory_order_acquire) != seen;
      });
      sleepers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    // Enter, then look at the job that is current now (a worker that slept through whole jobs
    // must not run a finished one). Both steps sequentially consistent against the caller's
    // close-then-count: either this worker sees the job closed, or the caller sees it and waits.
    active_.fetch_add(1);
    seen = generation_.load();
    if (closed_.load() != seen) drain();
    active_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::dispatch(int64_t num_tasks, const std::function<void(int64_t)>& task) {
  if (num_tasks <= 0) return;
  if (num_threads_ == 1 || num_tasks == 1) {
    for (int64_t i = 0; i < num_tasks; ++i) task(i);
    return;
  }
  job_ = &task;
  num_tasks_ = num_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  uint64_t gen;
  {
    // The lock orders the generation bump against a worker that is about to sleep.
    std::lock_guard lock(mutex_);
    gen = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  if (sleepers_.load() > 0) wake_.notify_all();
  drain();
  // Every task is claimed: close the job to late workers and wait for the tasks workers still
  // run. Spinning long before yielding measured faster than yielding early, even oversubscribed.
  closed_.store(gen);
  for (int spin = 0; active_.load() != 0; ++spin) {
    if (spin < kSpinIterations) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  const int parts = num_threads_;
  dispatch(parts, [&](int64_t part) { fn(static_cast<int>(part), parts); });
}

void ThreadPool::parallel_for(int64_t count, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (count <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (count + grain - 1) / grain;
  // About four chunks per thread: a thread that starts late or is descheduled holds back at most
  // a quarter of its share, and the claims stay few next to the work.
  const int64_t target = static_cast<int64_t>(num_threads_) * 4;
  const int64_t chunk = grain * std::max<int64_t>(1, (units + target - 1) / target);
  const int64_t chunks = (count + chunk - 1) / chunk;
  dispatch(chunks, [&](int64_t c) { fn(c * chunk, std::min(count, (c + 1) * chunk)); });
}

}  // namespace lightserve::kernels::cpu
