// The unit of work of the load generator: what one request asks for (RequestSpec), what a client
// observed while it streamed (StreamResult), and the interface a protocol client implements.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace lightserve::loadtest {

using Clock = std::chrono::steady_clock;

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// One request: a text prompt (completions, gRPC text) or chat messages (chat endpoint, gRPC chat).
struct RequestSpec {
  int64_t session = 0;  // conversation id; one request per session unless the dataset is chat
  int turn = 0;         // 0-based turn within the session
  std::string prompt;   // used when `messages` is empty
  std::vector<ChatMessage> messages;
  int max_tokens = 16;
  int approx_prompt_tokens = 0;  // what the dataset aimed for (the server's count is preferred)
};

// One content-bearing chunk (SSE event or gRPC message) as it arrived.
struct Chunk {
  Clock::time_point arrival;
  int num_tokens = 1;  // gRPC says; an SSE chunk counts as one
};

// What one streamed request produced. `error_reason` is empty on success; otherwise a short key
// that groups failures ("connect", "timeout", "http_429", "grpc_UNAVAILABLE", "closed", ...)
// and `error_detail` says more.
struct StreamResult {
  Clock::time_point start;
  Clock::time_point end;
  std::vector<Chunk> chunks;
  std::string text;
  std::optional<int> prompt_tokens;      // from the server's usage, when it sent one
  std::optional<int> completion_tokens;  // idem
  std::string error_reason;
  std::string error_detail;
  bool ok() const { return error_reason.empty(); }
};

// A protocol client. Thread-safe: start() may be called from any thread and `done` runs exactly
// once per call, on a thread of the client's choosing.
class Client {
 public:
  virtual ~Client() = default;
  virtual void start(const RequestSpec& spec, std::function<void(StreamResult)> done) = 0;
};

// Sampling settings every request carries.
struct GenerationSettings {
  std::string model;             // empty: the server's (gRPC) / resolved before the run (HTTP)
  double temperature = 0.0;      // greedy by default, as `vllm bench serve`
  bool ignore_eos = true;        // also sends min_tokens = max_tokens
  double timeout_seconds = 600;  // whole request, connect to last byte
  std::string api_key;
};

}  // namespace lightserve::loadtest
