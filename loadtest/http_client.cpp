#include "loadtest/http_client.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace lightserve::loadtest {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using json = nlohmann::json;
using asio::ip::tcp;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// A failure's reason key and detail from an error code met in `stage`.
void describe(const boost::system::error_code& ec, const char* stage, std::string& reason,
              std::string& detail) {
  if (ec == beast::error::timeout) {
    reason = "timeout";
  } else if (std::string(stage) == "connect" || std::string(stage) == "resolve") {
    reason = "connect";
  } else {
    reason = "closed";
  }
  detail = stage;
  detail.append(": ");
  detail.append(ec.message());
}

http::request<http::string_body> make_request(const HttpTarget& target, const std::string& path,
                                              std::string body, bool method_post,
                                              const std::string& api_key) {
  std::string full_path = target.prefix;
  full_path.append(path);
  http::request<http::string_body> req{method_post ? http::verb::post : http::verb::get, full_path,
                                       11};
  std::string host = target.host;
  host.append(":");
  host.append(target.port);
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "lightserve-loadtest");
  if (!api_key.empty()) {
    std::string bearer = "Bearer ";
    bearer.append(api_key);
    req.set(http::field::authorization, bearer);
  }
  if (method_post) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
  }
  return req;
}

// Connects `stream` (its deadline already set) to the target; false with reason/detail set.
asio::awaitable<bool> connect(beast::tcp_stream& stream, const HttpTarget& target,
                              std::string& reason, std::string& detail) {
  tcp::resolver resolver(co_await asio::this_coro::executor);
  auto [rec, endpoints] = co_await resolver.async_resolve(target.host, target.port, kTuple);
  if (rec) {
    describe(rec, "resolve", reason, detail);
    co_return false;
  }
  auto [cec, endpoint] = co_await stream.async_connect(endpoints, kTuple);
  if (cec) {
    describe(cec, "connect", reason, detail);
    co_return false;
  }
  co_return true;
}

// Reads the body after the header into `sink(bytes, arrival)` until the message ends.
template <typename Sink>
asio::awaitable<boost::system::error_code> read_body(beast::tcp_stream& stream,
                                                     beast::flat_buffer& buffer,
                                                     http::response_parser<http::buffer_body>& p,
                                                     Sink&& sink) {
  char chunk[16384];
  while (!p.is_done()) {
    p.get().body().data = chunk;
    p.get().body().size = sizeof chunk;
    auto [ec, n] = co_await http::async_read_some(stream, buffer, p, kTuple);
    if (ec == http::error::need_buffer) ec = {};
    const size_t got = sizeof chunk - p.get().body().size;
    if (got > 0) sink(std::string_view(chunk, got), Clock::now());
    if (ec) co_return ec;
  }
  co_return boost::system::error_code{};
}

}  // namespace

std::string HttpTarget::url() const {
  std::string url = "http://";
  url.append(host);
  url.append(":");
  url.append(port);
  url.append(prefix);
  return url;
}

Result<HttpTarget> parse_http_url(const std::string& url) {
  std::string rest = url;
  const std::string scheme = "http://";
  if (rest.rfind("https://", 0) == 0) {
    return Error{"https is not supported (use http:// or a local TLS terminator): " + url};
  }
  if (rest.rfind(scheme, 0) == 0) rest = rest.substr(scheme.size());
  HttpTarget t;
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) t.prefix = rest.substr(slash);
  while (!t.prefix.empty() && t.prefix.back() == '/') t.prefix.pop_back();
  const size_t colon = authority.rfind(':');
  if (colon == std::string::npos) {
    t.host = authority;
    t.port = "80";
  } else {
    t.host = authority.substr(0, colon);
    t.port = authority.substr(colon + 1);
  }
  if (t.host.empty() || t.port.empty() ||
      t.port.find_first_not_of("0123456789") != std::string::npos) {
    return Error{"not an http://HOST:PORT URL: " + url};
  }
  return t;
}

asio::awaitable<HttpReply> http_fetch(const HttpTarget& target, std::string path, std::string body,
                                      bool method_post, std::string api_key,
                                      double timeout_seconds) {
  HttpReply reply;
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(timeout_seconds)));
  if (!co_await connect(stream, target, reply.error_reason, reply.error_detail)) co_return reply;
  auto req = make_request(target, path, std::move(body), method_post, api_key);
  auto [wec, written] = co_await http::async_write(stream, req, kTuple);
  if (wec) {
    describe(wec, "write", reply.error_reason, reply.error_detail);
    co_return reply;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  auto [rec, read] = co_await http::async_read(stream, buffer, parser, kTuple);
  if (rec) {
    describe(rec, "read", reply.error_reason, reply.error_detail);
    co_return reply;
  }
  reply.status = static_cast<int>(parser.get().result_int());
  reply.body = std::move(parser.get().body());
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  co_return reply;
}

HttpReply http_fetch_blocking(const HttpTarget& target, const std::string& path,
                              const std::string& body, bool method_post, const std::string& api_key,
                              double timeout_seconds) {
  asio::io_context io;
  HttpReply reply;
  asio::co_spawn(io, http_fetch(target, path, body, method_post, api_key, timeout_seconds),
                 [&](std::exception_ptr e, HttpReply r) {
                   if (e) {
                     reply.error_reason = "internal";
                     reply.error_detail = "unexpected exception";
                   } else {
                     reply = std::move(r);
                   }
                 });
  io.run();
  return reply;
}

// ---- SSE -------------------------------------------------------------------------------------

void SseParser::feed(std::string_view data, Clock::time_point arrival, StreamResult& result) {
  pending_.append(data);
  for (;;) {
    // Events end with a blank line; servers use \n\n or \r\n\r\n.
    size_t end = pending_.find("\n\n");
    size_t skip = 2;
    const size_t crlf = pending_.find("\r\n\r\n");
    if (crlf != std::string::npos && (end == std::string::npos || crlf < end)) {
      end = crlf;
      skip = 4;
    }
    if (end == std::string::npos) return;
    const std::string block = pending_.substr(0, end);
    pending_.erase(0, end + skip);
    size_t pos = 0;
    while (pos <= block.size()) {
      size_t eol = block.find('\n', pos);
      if (eol == std::string::npos) eol = block.size();
      std::string_view line(block.data() + pos, eol - pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.rfind("data:", 0) == 0) {
        line.remove_prefix(5);
        while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        event(line, arrival, result);
      }
      pos = eol + 1;
    }
  }
}

void SseParser::event(std::string_view payload, Clock::time_point arrival, StreamResult& result) {
  if (payload == "[DONE]") {
    done_ = true;
    return;
  }
  const json data = json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (data.is_discarded() || !data.is_object()) {
    if (result.error_reason.empty()) {
      result.error_reason = "bad_response";
      result.error_detail = "an SSE event that is not a JSON object: ";
      result.error_detail.append(payload.substr(0, 200));
    }
    return;
  }
  if (data.contains("error")) {
    if (result.error_reason.empty()) {
      result.error_reason = "stream_error";
      result.error_detail = data["error"].dump().substr(0, 300);
    }
    return;
  }
  if (const auto usage = data.find("usage"); usage != data.end() && usage->is_object()) {
    if (usage->contains("prompt_tokens") && (*usage)["prompt_tokens"].is_number_integer()) {
      result.prompt_tokens = (*usage)["prompt_tokens"].get<int>();
    }
    if (usage->contains("completion_tokens") && (*usage)["completion_tokens"].is_number_integer()) {
      result.completion_tokens = (*usage)["completion_tokens"].get<int>();
    }
  }
  const auto choices = data.find("choices");
  if (choices == data.end() || !choices->is_array() || choices->empty()) return;
  const json& choice = (*choices)[0];
  std::string content;
  if (const auto text = choice.find("text"); text != choice.end() && text->is_string()) {
    content = text->get<std::string>();
  } else if (const auto delta = choice.find("delta"); delta != choice.end()) {
    for (const char* key : {"content", "reasoning_content", "reasoning"}) {
      if (const auto c = delta->find(key); c != delta->end() && c->is_string()) {
        content.append(c->get<std::string>());
      }
    }
  }
  if (!content.empty()) {
    result.chunks.push_back(Chunk{arrival, 1});
    result.text.append(content);
  }
  if (const auto f = choice.find("finish_reason"); f != choice.end() && !f->is_null()) {
    finished_ = true;
  }
}

// ---- OpenAI streaming client ----------------------------------------------------------------

OpenAiClient::OpenAiClient(asio::io_context& io, HttpTarget target, OpenAiEndpoint endpoint,
                           GenerationSettings settings)
    : io_(io), target_(std::move(target)), endpoint_(endpoint), settings_(std::move(settings)) {}

std::string OpenAiClient::request_body(const RequestSpec& spec) const {
  json body = {{"model", settings_.model},
               {"max_tokens", spec.max_tokens},
               {"temperature", settings_.temperature},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (settings_.ignore_eos) {
    body["ignore_eos"] = true;
    body["min_tokens"] = spec.max_tokens;
  }
  if (endpoint_ == OpenAiEndpoint::kCompletions) {
    body["prompt"] = spec.prompt;
  } else {
    json messages = json::array();
    if (spec.messages.empty()) {
      messages.push_back({{"role", "user"}, {"content", spec.prompt}});
    } else {
      for (const ChatMessage& m : spec.messages) {
        messages.push_back({{"role", m.role}, {"content", m.content}});
      }
    }
    body["messages"] = std::move(messages);
  }
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// Sends one streaming request and fills `result` (its start already set); returns on the first
// failure with error_reason set.
asio::awaitable<void> stream_body(const HttpTarget& target, const std::string& path,
                                  std::string body, const GenerationSettings& settings,
                                  StreamResult& result) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(settings.timeout_seconds)));
  if (!co_await connect(stream, target, result.error_reason, result.error_detail)) co_return;
  auto req = make_request(target, path, std::move(body), true, settings.api_key);
  req.set(http::field::accept, "text/event-stream");
  auto [wec, written] = co_await http::async_write(stream, req, kTuple);
  if (wec) {
    describe(wec, "write", result.error_reason, result.error_detail);
    co_return;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  auto [hec, header_bytes] = co_await http::async_read_header(stream, buffer, parser, kTuple);
  if (hec) {
    describe(hec, "read header", result.error_reason, result.error_detail);
    co_return;
  }
  const int status = static_cast<int>(parser.get().result_int());
  if (status != 200) {
    std::string error_body;
    co_await read_body(stream, buffer, parser, [&](std::string_view bytes, Clock::time_point) {
      error_body.append(bytes);
    });
    result.error_reason = "http_";
    result.error_reason.append(std::to_string(status));
    result.error_detail = error_body.substr(0, 300);
    co_return;
  }
  SseParser sse;
  const auto ec = co_await read_body(
      stream, buffer, parser,
      [&](std::string_view bytes, Clock::time_point arrival) { sse.feed(bytes, arrival, result); });
  if (result.error_reason.empty() && ec) {
    describe(ec, "read stream", result.error_reason, result.error_detail);
  } else if (result.error_reason.empty() && !sse.done() && !sse.finished()) {
    result.error_reason = "closed";
    result.error_detail = "the stream ended without a finish or [DONE]";
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

// `done` runs exactly once, whatever happens inside.
asio::awaitable<void> stream_one(HttpTarget target, std::string path, std::string body,
                                 GenerationSettings settings,
                                 std::function<void(StreamResult)> done) {
  StreamResult result;
  result.start = Clock::now();
  try {
    co_await stream_body(target, path, std::move(body), settings, result);
  } catch (const std::exception& e) {
    if (result.error_reason.empty()) {
      result.error_reason = "internal";
      result.error_detail = e.what();
    }
  }
  result.end = Clock::now();
  done(std::move(result));
}

}  // namespace

void OpenAiClient::start(const RequestSpec& spec, std::function<void(StreamResult)> done) {
  const std::string path =
      endpoint_ == OpenAiEndpoint::kCompletions ? "/v1/completions" : "/v1/chat/completions";
  asio::co_spawn(io_, stream_one(target_, path, request_body(spec), settings_, std::move(done)),
                 asio::detached);
}

}  // namespace lightserve::loadtest
