#include "scheduler/events.h"

#include <utility>

namespace lightserve::scheduler {

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "unknown";
}

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case ErrorKind::kOutOfRange:
      return "OUT_OF_RANGE";
    case ErrorKind::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case ErrorKind::kUnavailable:
      return "UNAVAILABLE";
    case ErrorKind::kInternal:
      return "INTERNAL";
    case ErrorKind::kUnauthenticated:
      return "UNAUTHENTICATED";
    case ErrorKind::kNotFound:
      return "NOT_FOUND";
  }
  return "UNKNOWN";
}

void EventStream::push(RequestEvent event) {
  std::function<void()> listener;
  {
    std::lock_guard lock(mutex_);
    if (event.kind == RequestEvent::Kind::kFinished) finished_ = true;
    events_.push_back(std::move(event));
    listener = listener_;
  }
  ready_.notify_all();
  if (listener) listener();
}

void EventStream::set_listener(std::function<void()> listener) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(listener);
}

std::optional<RequestEvent> EventStream::try_pop() {
  std::lock_guard lock(mutex_);
  if (events_.empty()) return std::nullopt;
  RequestEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

std::optional<RequestEvent> EventStream::wait_pop(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  RequestEvent event = std::move(events_.front());
  events_.pop_front();
  return event;
}

std::vector<RequestEvent> EventStream::drain() {
  std::lock_guard lock(mutex_);
  std::vector<RequestEvent> out(std::make_move_iterator(events_.begin()),
                                std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

bool EventStream::finished() const {
  std::lock_guard lock(mutex_);
  return finished_;
}

size_t EventStream::unread() const {
  std::lock_guard lock(mutex_);
  return events_.size();
}

}  // namespace lightserve::scheduler
