// Request lifecycle (docs/design.md §6): what a client asks for, the states a request moves
// through, and the engine's record of one request.
//
//   waiting ──admit──▶ prefilling ──last layer──▶ decoding ──stop / length──▶ finished
//      ▲                   │  │                     │  │
//      │                   │  └────── error ────────┼──┴──▶ finished (kError)
//      └── preempted ◀─────┴────────────────────────┘      (optimistic policy: recompute later)
//   any non-terminal state ──abort──▶ aborted
//
// `preempted` is a waiting state: the request sits in the waiting queue again, its KV given
// back, its generated tokens kept; on re-admission its prefill recomputes prompt + generated.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "memory/kv_allocation.h"
#include "memory/kv_layout.h"
#include "sampling/sampler.h"
#include "scheduler/detokenizer.h"
#include "scheduler/events.h"
#include "scheduler/stop_rules.h"

namespace lightserve::scheduler {

enum class RequestState : uint8_t {
  kWaiting,
  kPrefilling,
  kDecoding,
  kPreempted,
  kFinished,
  kAborted,
};

const char* to_string(RequestState state);
inline bool is_queued(RequestState s) {
  return s == RequestState::kWaiting || s == RequestState::kPreempted;
}
inline bool is_running(RequestState s) {
  return s == RequestState::kPrefilling || s == RequestState::kDecoding;
}
inline bool is_terminal(RequestState s) {
  return s == RequestState::kFinished || s == RequestState::kAborted;
}
// The lifecycle's edges (the diagram above).
bool is_legal_transition(RequestState from, RequestState to);

// What a client asks for. Untrusted: Engine::add validates every field.
struct RequestParams {
  std::vector<int32_t> prompt;  // token ids, non-empty, each in [0, vocab)
  int32_t max_tokens = 256;     // >= 1
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop_strings;  // non-empty strings
  bool ignore_eos = false;
  sampling::SamplingParams sampling;  // temperature <= 0: greedy
  // -1: no log-probabilities; 0..kMaxLogprobs: each token event carries the sampled token's
  // log-probability and this many top alternatives.
  int32_t logprobs = -1;
  static constexpr int32_t kMaxLogprobs = 20;
  // -1: none; 0..kMaxLogprobs: the first event carries the prompt's log-probabilities (each
  // prompt token but the first given the ones before it, with this many alternatives), computed
  // during the prefill (echo with logprobs; vLLM's prompt_logprobs).
  int32_t prompt_logprobs = -1;
  int32_t priority = 0;  // higher first, when SchedulerConfig::priority_scheduling
  // Per-request LightTransfer override (full / streaming footprint); nullopt: the arena's hybrid.
  std::optional<memory::Footprint> footprint;
  // Opaque, for logs: the client's x-request-id, or one the frontend made. Echoed in kFinished.
  std::string request_tag;
};

// The engine's record of one accepted request. Owned by the engine thread.
struct Request {
  RequestId id = 0;
  RequestParams params;
  memory::Footprint footprint;
  double arrival_seconds = 0;
  RequestState state = RequestState::kWaiting;

  // Catch-up model: `tokens` is the prompt then every generated token. The KV holds
  // num_computed_tokens of them in every layer. A prefill covers tokens[0, prefill_tokens) and
  // has run prefill_layers_done layers over them.
  std::vector<int32_t> tokens;
  int32_t num_prompt_tokens = 0;
  int32_t num_computed_tokens = 0;
  int32_t prefill_tokens = 0;
  int32_t prefill_layers_done = 0;
  bool begins_sequence = false;  // the next entry is the first since admission

  // Shared prefill (Engine::add_group, docs/design.md §6): a fork waits (never admitted by the
  // capacity stage) until request `fork_of` has run its prefill's last layer, then starts from a
  // copy of that request's KV and samples its first token from that request's logits. 0: an
  // ordinary request (also a fork whose parent ended, was preempted or had no room for it).
  RequestId fork_of = 0;
  // RequestParams::prompt_logprobs: filled by the executor at the first prefill (a fork copies
  // its parent's), moved into the first event.
  std::vector<TokenLogprobs> prompt_logprobs;
  bool first_event_sent = false;
  std::vector<RequestId> forks;  // the requests forked from this one, until its prefill completes

  memory::KvAllocation kv;                   // non-empty exactly while running
  std::optional<sampling::Sampler> sampler;  // lives across preemptions: same seed, same output
  StopRules stop_rules;
  std::unique_ptr<TextStream> text;
  std::shared_ptr<EventStream> events;

  std::optional<double> admitted_seconds;  // first admission
  std::optional<double> first_token_seconds;
  double last_token_seconds = 0;
  int32_t num_preemptions = 0;

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_generated() const { return num_tokens() - num_prompt_tokens; }
  // The most tokens the request can ever hold in its KV: what `reserve` reserves.
  int64_t max_total_tokens() const {
    return static_cast<int64_t>(num_prompt_tokens) + params.max_tokens;
  }
  // Changes state; an illegal edge fails an LS_CHECK.
  void transition(RequestState to);
};

}  // namespace lightserve::scheduler
