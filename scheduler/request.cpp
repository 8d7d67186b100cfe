#include "scheduler/request.h"

#include "base/check.h"

namespace lightserve::scheduler {

const char* to_string(RequestState state) {
  switch (state) {
    case RequestState::kWaiting:
      return "waiting";
    case RequestState::kPrefilling:
      return "prefilling";
    case RequestState::kDecoding:
      return "decoding";
    case RequestState::kPreempted:
      return "preempted";
    case RequestState::kFinished:
      return "finished";
    case RequestState::kAborted:
      return "aborted";
  }
  return "unknown";
}

bool is_legal_transition(RequestState from, RequestState to) {
  using S = RequestState;
  if (is_terminal(from)) return false;
  if (to == S::kAborted) return true;
  switch (from) {
    case S::kWaiting:
    case S::kPreempted:
      return to == S::kPrefilling;
    case S::kPrefilling:
      return to == S::kDecoding || to == S::kFinished || to == S::kPreempted;
    case S::kDecoding:
      return to == S::kFinished || to == S::kPreempted;
    default:
      return false;
  }
}

void Request::transition(RequestState to) {
  LS_CHECK(is_legal_transition(state, to))
      << "request " << id << ": " << to_string(state) << " -> " << to_string(to);
  state = to;
}

}  // namespace lightserve::scheduler
