// The CUDA backend's per-op profiler (LIGHTSERVE_CUDA_PROFILE), split from cuda_backend.cu.
// Not a public header.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"

namespace lightserve::kernels::cuda {

// LIGHTSERVE_CUDA_PROFILE set: the GPU time of every op, from CUDA events around it, and the
// time the GPU sat idle between consecutive ops waiting for the host to issue the next (the
// signature of a launch-bound step), printed to stderr when the backend goes. Off: one branch
// per op.
class OpProfiler {
 public:
  explicit OpProfiler(cudaStream_t stream) : stream_(stream) {
    const char* env = std::getenv("LIGHTSERVE_CUDA_PROFILE");
    enabled_ = env != nullptr && *env != '\0';
  }
  ~OpProfiler() {
    if (!enabled_) return;
    collect();
    std::fprintf(stderr, "CUDA op profile (GPU ms from events; idle = GPU waiting between ops)\n");
    double busy = 0;
    for (const auto& [name, t] : totals_) busy += t.ms;
    for (const auto& [name, t] : totals_) {
      std::fprintf(stderr, "  %-20s %9lld calls %10.1f ms %8.1f us/call %5.1f%%\n", name.c_str(),
                   static_cast<long long>(t.calls), t.ms,
                   1e3 * t.ms / std::max<int64_t>(t.calls, 1), 100.0 * t.ms / std::max(busy, 1e-9));
    }
    std::fprintf(stderr, "  busy %.1f ms, idle between ops %.1f ms\n", busy, idle_ms_);
    for (cudaEvent_t e : pool_) static_cast<void>(cudaEventDestroy(e));
  }

  bool enabled() const { return enabled_; }
  // Marks the start and the end of one op's work on the stream.
  void begin(const char* name) {
    open_ = Record{name, event(), nullptr};
    LS_CUDA_CHECK(cudaEventRecord(open_.start, stream_));
  }
  // From a destructor, also while an op's error unwinds: a failure here only loses the record.
  void end() noexcept {
    if (pool_.empty() && cudaEventCreate(&open_.end) != cudaSuccess) return;
    if (open_.end == nullptr) {
      open_.end = pool_.back();
      pool_.pop_back();
    }
    if (cudaEventRecord(open_.end, stream_) == cudaSuccess) records_.push_back(open_);
  }
  // After the stream has been synchronized: every recorded event is complete.
  void collect() {
    cudaEvent_t previous_end = nullptr;
    for (const Record& r : records_) {
      float ms = 0;
      LS_CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.end));
      Total& t = totals_[r.name];
      ++t.calls;
      t.ms += ms;
      if (previous_end != nullptr) {
        LS_CUDA_CHECK(cudaEventElapsedTime(&ms, previous_end, r.start));
        idle_ms_ += ms;
      }
      previous_end = r.end;
      pool_.push_back(r.start);
      pool_.push_back(r.end);
    }
    records_.clear();
  }

 private:
  struct Record {
    const char* name;
    cudaEvent_t start, end;
  };
  struct Total {
    int64_t calls = 0;
    double ms = 0;
  };
  cudaEvent_t event() {
    if (pool_.empty()) {
      cudaEvent_t e;
      LS_CUDA_CHECK(cudaEventCreate(&e));
      return e;
    }
    cudaEvent_t e = pool_.back();
    pool_.pop_back();
    return e;
  }

  cudaStream_t stream_;
  bool enabled_ = false;
  Record open_{};
  std::vector<Record> records_;
  std::vector<cudaEvent_t> pool_;
  std::map<std::string, Total> totals_;
  double idle_ms_ = 0;
};

// One op's profiling scope (begin at construction, end at destruction), when the profiler is
// enabled.
class Profiled {
 public:
  Profiled(OpProfiler& p, const char* name) : p_(p.enabled() ? &p : nullptr) {
    if (p_ != nullptr) p_->begin(name);
  }
  ~Profiled() {
    if (p_ != nullptr) p_->end();
  }
  Profiled(const Profiled&) = delete;
  Profiled& operator=(const Profiled&) = delete;

 private:
  OpProfiler* p_;
};

}  // namespace lightserve::kernels::cuda
