// The engine's time source, injected so tests run on simulated time (docs/design.md §11 habit 7).
#pragma once

#include <chrono>

namespace lightserve::scheduler {

// Seconds on a monotonic scale with an arbitrary origin. Thread-safe: Engine::add reads it on the
// caller's thread (arrival time), step() on the engine thread.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual double now_seconds() const = 0;
};

class SteadyClock final : public Clock {
 public:
  double now_seconds() const override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace lightserve::scheduler
