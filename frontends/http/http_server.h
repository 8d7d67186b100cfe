// The HTTP frontend (docs/design.md §7), Boost.Beast on its own I/O threads: the OpenAI-compatible
// API
// (/v1/completions, /v1/chat/completions with SSE, /v1/models), /tokenize, /detokenize, /health,
// /ready and /metrics (Prometheus text).
//
// A connection closed by its client aborts its request. Bodies over max_body_bytes get 413,
// requests not read within client_timeout_seconds are closed (408 when possible). With an API
// key configured, /v1/*, /tokenize and /detokenize need `Authorization: Bearer KEY` (401);
// /health, /ready and /metrics stay open (probes and scrapers).
#pragma once

#include <memory>

#include "base/status.h"
#include "serving/serving_core.h"

namespace lightserve::frontends {

class HttpServer {
 public:
  // Listens on config().host:config().http_port of `engine` (port 0: an ephemeral one).
  // `engine` must outlive the server.
  static Result<std::unique_ptr<HttpServer>> start(serving::ServingCore& engine);
  virtual ~HttpServer() = default;

  virtual int port() const = 0;
  // Stops accepting, closes idle connections, lets responses in progress finish, joins threads.
  virtual void shutdown() = 0;
};

}  // namespace lightserve::frontends
