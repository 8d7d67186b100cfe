#include "executor/fault_injection.h"

#include <charconv>
#include <chrono>
#include <new>
#include <stdexcept>
#include <thread>
#include <utility>

namespace lightserve::executor {
namespace {

constexpr std::pair<const char*, Fault::Kind> kKinds[] = {
    {"throw", Fault::Kind::kThrow},
    {"bad_alloc", Fault::Kind::kBadAlloc},
    {"error", Fault::Kind::kError},
    {"slow", Fault::Kind::kSlow},
};

bool read_int(std::string_view text, int64_t& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && out >= 1;
}

Result<Fault> parse_fault(std::string_view item) {
  const auto bad = [&](const char* why) {
    return Error{"fault '" + std::string(item) + "': " + why +
                 " (expected KIND@STEP[xCOUNT][:MS], KIND one of throw, bad_alloc, error, slow)"};
  };
  const size_t at = item.find('@');
  if (at == std::string_view::npos) return bad("no '@'");
  Fault fault;
  const std::string_view kind = item.substr(0, at);
  bool known = false;
  for (const auto& [name, k] : kKinds) {
    if (kind == name) {
      fault.kind = k;
      known = true;
    }
  }
  if (!known) return bad("unknown kind");
  std::string_view rest = item.substr(at + 1);
  if (const size_t colon = rest.find(':'); colon != std::string_view::npos) {
    int64_t ms = 0;
    if (fault.kind != Fault::Kind::kSlow) return bad("only slow takes :MS");
    if (!read_int(rest.substr(colon + 1), ms) || ms > 600000)
      return bad("MS must be in [1, 600000]");
    fault.slow_ms = static_cast<int32_t>(ms);
    rest = rest.substr(0, colon);
  } else if (fault.kind == Fault::Kind::kSlow) {
    return bad("slow needs :MS");
  }
  if (const size_t x = rest.find('x'); x != std::string_view::npos) {
    if (!read_int(rest.substr(x + 1), fault.num_steps)) return bad("COUNT must be ≥ 1");
    rest = rest.substr(0, x);
  }
  if (!read_int(rest, fault.first_step)) return bad("STEP must be ≥ 1");
  return fault;
}

}  // namespace

Result<FaultPlan> FaultPlan::parse(std::string_view spec) {
  FaultPlan plan;
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    if (!item.empty()) {
      Result<Fault> fault = parse_fault(item);
      if (!fault) return fault.error();
      plan.faults.push_back(fault.value());
    }
    if (comma == std::string_view::npos) break;
    spec.remove_prefix(comma + 1);
  }
  if (plan.faults.empty()) return Error{"the fault plan names no fault"};
  return plan;
}

std::string FaultPlan::describe() const {
  std::string out;
  for (const Fault& f : faults) {
    if (!out.empty()) out += ", ";
    for (const auto& [name, k] : kKinds) {
      if (k == f.kind) out += name;
    }
    out += " at step " + std::to_string(f.first_step);
    if (f.num_steps > 1) out += " for " + std::to_string(f.num_steps) + " steps";
    if (f.kind == Fault::Kind::kSlow) out += " (" + std::to_string(f.slow_ms) + " ms)";
  }
  return out;
}

Status FaultInjectingExecutor::execute(const scheduler::StepBatch& batch,
                                       scheduler::StepOutput& output) {
  const int64_t step = ++num_steps_;
  for (const Fault& f : plan_.faults) {
    if (step < f.first_step || step >= f.first_step + f.num_steps) continue;
    const std::string what = "injected fault at step " + std::to_string(step);
    switch (f.kind) {
      case Fault::Kind::kThrow:
        throw std::runtime_error(what);
      case Fault::Kind::kBadAlloc:
        throw std::bad_alloc();
      case Fault::Kind::kError:
        return Error{what};
      case Fault::Kind::kSlow:
        std::this_thread::sleep_for(std::chrono::milliseconds(f.slow_ms));
        break;
    }
  }
  return inner_.execute(batch, output);
}

}  // namespace lightserve::executor
