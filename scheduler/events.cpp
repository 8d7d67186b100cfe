#include "scheduler/events.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace lightserve::scheduler {

TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int32_t top_n) {
  float max_logit = -INFINITY;
  for (float v : logits) max_logit = std::max(max_logit, v);
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v - max_logit));
  const float log_z = max_logit + static_cast<float>(std::log(sum));
  TokenLogprobs out;
  const float own = logits[static_cast<size_t>(token)];
  out.logprob = own - log_z;
  for (float v : logits) out.rank += v > own ? 1 : 0;
  if (top_n <= 0) return out;
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const size_t n = std::min(static_cast<size_t>(top_n), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(),
                    [&](int32_t a, int32_t b) {
                      const float la = logits[static_cast<size_t>(a)];
                      const float lb = logits[static_cast<size_t>(b)];
                      return la != lb ? la > lb : a < b;
                    });
  for (size_t i = 0; i < n; ++i) {
    out.top.push_back({ids[i], logits[static_cast<size_t>(ids[i])] - log_z});
  }
  return out;
}

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
