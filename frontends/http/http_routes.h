// The HTTP frontend's request handling, apart from its sockets (server/http_server.cpp): one
// parsed HTTP request in, either a whole reply or a generation that was submitted to the engine.
//
// Checks in order: route (404), method (405), API key (401), Content-Type (415), then the body
// (400 from openai_api.h, or the engine's prepare()/submit() errors through error_mapping.h).
// CORS (server.cors_origins): a request whose Origin is allowed gets Access-Control-Allow-Origin
// on every answer (Vary: Origin; x-request-id exposed), and OPTIONS on any route is answered as
// a preflight (204, no API key needed) with the methods and headers a browser may send.
// Thread-safe as serving::ServingCore is; call it from any I/O thread.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "frontends/common/generation_group.h"
#include "frontends/http/openai_api.h"
#include "scheduler/engine.h"
#include "serving/serving_core.h"

namespace lightserve::frontends {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";  // none when empty
  std::string body;
  HttpHeaders headers;  // extra ones (Allow, Retry-After, CORS)
};

// A request the engine accepted: the caller streams or collects its events.
struct HttpGeneration {
  openai::Endpoint endpoint = openai::Endpoint::kCompletions;
  bool stream = false;
  bool include_usage = false;
  bool want_logprobs = false;
  openai::ResponseOptions options;          // n, echo, system_fingerprint, tool calls
  std::shared_ptr<GenerationGroup> events;  // the n samples' events (n = 1: one request)
  std::string request_tag;                  // answered in the x-request-id header
  HttpHeaders headers;                      // extra ones for the answer (CORS)
};

using HttpOutcome = std::variant<HttpReply, HttpGeneration>;

HttpOutcome handle_http_request(const HttpRequest& request, serving::ServingCore& engine);

// Error replies with OpenAI bodies, for the protocol-level failures the socket layer sees too
// (413, 408, 400 for unparsable HTTP, 503 over max_connections).
HttpReply error_reply(int status, const std::string& message);
HttpReply engine_error_reply(const scheduler::EngineError& error);

}  // namespace lightserve::frontends
