// LS_CHECK: the invariant check of the memory library (docs/design.md §9, docs/design.md §11 habit
// 8).
//
// Misuse of an allocator (double free, a foreign id, a stale plan) means the engine's bookkeeping
// is already wrong; carrying on would hand the same KV memory to two requests. So a failed check
// prints file:line, the condition and a message to stderr and aborts, in every build type
// (unlike assert, it is not compiled out by NDEBUG). Untrusted input never reaches an LS_CHECK:
// it is validated earlier and answered with a Status.
//
//   LS_CHECK(id < num_total) << "block " << id << " is not from this pool";
#pragma once

#include <cstdlib>
#include <iostream>
#include <sstream>

namespace lightserve::detail {

// Collects the message of a failed check; its destructor reports and aborts.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition) {
    stream_ << file << ":" << line << ": check failed: " << condition << ": ";
  }
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  ~CheckFailure() {
    std::cerr << stream_.str() << std::endl;
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Turns the `stream << ...` chain into void so the macro is a single expression (no dangling
// else when used inside an unbraced if).
struct CheckVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace lightserve::detail

#define LS_CHECK(condition)                            \
  (condition) ? static_cast<void>(0)                   \
              : ::lightserve::detail::CheckVoidify() & \
                    ::lightserve::detail::CheckFailure(__FILE__, __LINE__, #condition).stream()
