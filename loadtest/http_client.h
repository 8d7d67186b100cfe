// HTTP for the load generator (Boost.Beast over one io_context): a blocking GET/POST for the
// checks before a run and the /metrics scrapes, and the OpenAI streaming client (SSE) that drives
// /v1/completions or /v1/chat/completions. One connection per request; every operation of a
// request shares one deadline (GenerationSettings::timeout_seconds).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <string>

#include "base/status.h"
#include "loadtest/request.h"

namespace lightserve::loadtest {

// http://host:port[/prefix]; the prefix (e.g. "/v1" is NOT expected: give the server root) is
// kept and put before every path.
struct HttpTarget {
  std::string host = "127.0.0.1";
  std::string port = "8080";
  std::string prefix;  // without a trailing slash
  std::string url() const;
};
Result<HttpTarget> parse_http_url(const std::string& url);

struct HttpReply {
  int status = 0;  // 0: no HTTP answer (error_reason says why)
  std::string body;
  std::string error_reason;  // "connect", "timeout", "closed", ...
  std::string error_detail;
};

// One request/response with a whole body; `body` empty and `method_post` false means GET.
boost::asio::awaitable<HttpReply> http_fetch(const HttpTarget& target, std::string path,
                                             std::string body, bool method_post,
                                             std::string api_key, double timeout_seconds);
// The same, blocking, on a private io_context.
HttpReply http_fetch_blocking(const HttpTarget& target, const std::string& path,
                              const std::string& body, bool method_post, const std::string& api_key,
                              double timeout_seconds);

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

// Streams each request with `stream: true` and `stream_options.include_usage`, parses the SSE
// `data:` events, timestamps every chunk with content. The requests run on `io`.
class OpenAiClient final : public Client {
 public:
  OpenAiClient(boost::asio::io_context& io, HttpTarget target, OpenAiEndpoint endpoint,
               GenerationSettings settings);
  void start(const RequestSpec& spec, std::function<void(StreamResult)> done) override;

  // The JSON body sent for `spec` (exposed for tests and --dry-run style checks).
  std::string request_body(const RequestSpec& spec) const;

 private:
  boost::asio::io_context& io_;
  HttpTarget target_;
  OpenAiEndpoint endpoint_;
  GenerationSettings settings_;
};

// Feeds an SSE byte stream: splits events, reads OpenAI chunks. Pure, for tests.
class SseParser {
 public:
  // Consumes `data`; chunks with content are appended to `result` with `arrival`.
  void feed(std::string_view data, Clock::time_point arrival, StreamResult& result);
  bool done() const { return done_; }          // "data: [DONE]" seen
  bool finished() const { return finished_; }  // a finish_reason seen

 private:
  void event(std::string_view payload, Clock::time_point arrival, StreamResult& result);
  std::string pending_;
  bool done_ = false;
  bool finished_ = false;
};

}  // namespace lightserve::loadtest
