// The per-request event stream (docs/design.md §1, docs/design.md §11 habit 6): the engine thread
// pushes token and finish events; a frontend handler on any thread reads them. Exactly one
// kFinished event ends every accepted request, and nothing follows it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "scheduler/errors.h"

namespace lightserve::scheduler {

using RequestId = uint64_t;

enum class FinishReason : uint8_t {
  kStop,    // an end-of-generation or stop token id, or a stop string
  kLength,  // max_tokens generated
  kAbort,   // an abort command (a client that went away, or engine shutdown)
  kError,   // the executor failed a step holding this request
};

const char* to_string(FinishReason reason);

// Seconds, from the engine's injected clock.
struct RequestTimings {
  double queue_seconds = 0;        // arrival -> first admission (0 if never admitted)
  double time_to_first_token = 0;  // arrival -> first generated token (0 if none)
  double e2e_seconds = 0;          // arrival -> finish
  int32_t num_prompt_tokens = 0;
  int32_t num_generated_tokens = 0;  // includes a stop token id, which is never streamed
  int32_t num_preemptions = 0;
  int32_t num_lazy_layers = 0;  // lazy (streaming) layers of its layer map when it finished
};

// A generated token's log-probability under the model's raw distribution (before temperature and
// truncation, as the OpenAI API reports it), and the `n` most likely alternatives.
struct TokenLogprob {
  int32_t token_id = -1;
  float logprob = 0;
};
struct TokenLogprobs {
  float logprob = 0;              // of the sampled token
  std::vector<TokenLogprob> top;  // most likely first; RequestParams::logprobs entries
  int32_t rank = 1;               // of the sampled token: 1 + how many are strictly more likely
};
// log-softmax of raw `logits` at `token`, and the `top_n` most likely ids (ties: lower id first).
TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int32_t top_n);

struct RequestEvent {
  enum class Kind : uint8_t { kToken, kFinished };
  Kind kind = Kind::kToken;
  RequestId request_id = 0;
  // kToken: the generated id and the text it releases (may be empty: held back by the
  // detokenizer or by a possible stop string). kFinished: token_id is the stop token id when
  // one ended the request, else -1; text is the last held-back text released at the finish.
  int32_t token_id = -1;
  std::string text;
  double time_seconds = 0;                // when the engine emitted the event
  double inter_token_seconds = 0;         // kToken: since the previous token (TTFT for the first)
  std::optional<TokenLogprobs> logprobs;  // kToken, when RequestParams::logprobs >= 0
  // The request's first event (token or finish), when RequestParams::prompt_logprobs >= 0: entry
  // t - 1 is prompt token t's log-probability given tokens 0..t-1 (none for token 0), with
  // prompt_logprobs alternatives.
  std::vector<TokenLogprobs> prompt_logprobs;
  std::optional<FinishReason> finish_reason;  // kFinished only
  std::optional<EngineError> error;           // kFinished with kError only
  RequestTimings timings;                     // kFinished only
  std::string request_tag;                    // kFinished only: RequestParams::request_tag
};

// Thread-safe single-request queue of events. The engine pushes; readers pop.
class EventStream {
 public:
  void push(RequestEvent event);
  std::optional<RequestEvent> try_pop();
  // Waits up to `timeout` for an event; nullopt on timeout.
  std::optional<RequestEvent> wait_pop(std::chrono::milliseconds timeout);
  std::vector<RequestEvent> drain();
  bool finished() const;  // the kFinished event has been pushed (it may still be unread)
  size_t unread() const;  // events pushed and not yet popped (the engine's backpressure reads it)

  // `listener` runs after every later push, on the pushing (engine) thread, outside the lock. It
  // must not block and must not call back into the engine: an asynchronous frontend uses it to
  // schedule its own try_pop() (a gRPC reactor starts a write, an Asio handler is posted). Events
  // pushed before the listener was set are not announced: pop once after setting it.
  void set_listener(std::function<void()> listener);

 private:
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<RequestEvent> events_;
  bool finished_ = false;
  std::function<void()> listener_;  // guarded by mutex_ (copied out before the call)
};

}  // namespace lightserve::scheduler
