// The HTTP frontend's sockets (http_server.h): an acceptor and one Session per connection, all on
// a pool of kNumIoThreads Asio threads; each session runs on its own strand, so its state needs
// no lock. What a request means is decided in http_routes.cpp; this file moves bytes.
//
// A session's life: read a request (header, then body; the read timer answers a stalled client
// with 408 and an idle keep-alive connection with a close), answer it, and read the next one.
// While a generation is pending a second read watches the socket, so a client that goes away is
// seen at once and its request aborted (its KV is freed in the engine's next step), streamed or
// not. Streamed responses (SSE over chunked encoding) keep one write in flight; the engine's
// event listener only posts a wake-up to the strand.
//
// Backpressure: a stream's socket gets a fixed send buffer (kStreamSocketSendBuffer), and the
// stream takes events from its EventStream only while its unsent bytes are under
// kStreamBufferBytes. A client that reads slowly leaves the rest in the EventStream, where the
// engine sees them and holds the request out of decode steps (SchedulerConfig::max_unread_events,
// --max-stream-backlog) until the client catches up; one that stops reading altogether stalls the
// write, and the write timer (--client-timeout) closes it and aborts the request.
//
// Connections: over --max-connections-per-client (by peer address) a new connection is answered
// 429; at --max-connections an idle keep-alive connection of the client holding the most
// connections is closed to make room (so one client parking idle connections cannot lock others
// out), and only when none is idle does the new one get 503.
#include "frontends/http/http_server.h"

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "frontends/http/http_routes.h"
#include "frontends/http/openai_api.h"

namespace lightserve::frontends {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr int kNumIoThreads = 2;
constexpr uint32_t kHeaderLimit = 16 * 1024;
constexpr size_t kWatchReadBytes = 4096;
constexpr size_t kMaxReadAheadBytes = 64 * 1024;  // pipelined bytes kept while a response runs
constexpr size_t kStreamBufferBytes = 32 * 1024;  // a stream's unsent bytes before it stops popping
// A stream's kernel send buffer (SO_SNDBUF; Linux doubles it): fixed, so the kernel's autotuning
// (up to net.ipv4.tcp_wmem's 4 MiB) cannot absorb a slow reader's backlog. 32 KiB per round trip
// is 640 KB/s at a 50 ms RTT: hundreds of tokens a second even with 20 logprobs each.
constexpr int kStreamSocketSendBuffer = 32 * 1024;
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kMaxLingerBytes = 16 << 20;
constexpr auto kShutdownGrace = std::chrono::seconds(10);
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(50);

// Engine-thread wake-ups reach a session's strand through this gate. shutdown() closes it before
// the io_context goes away, so a late listener call never posts into a dead context.
class NotifyGate {
 public:
  template <typename Handler>
  void post(const net::any_io_executor& executor, Handler&& handler) {
    std::lock_guard lock(mutex_);
    if (open_) net::post(executor, std::forward<Handler>(handler));
  }
  void close() {
    std::lock_guard lock(mutex_);
    open_ = false;
  }

 private:
  std::mutex mutex_;
  bool open_ = true;
};

// The first coding named in the request's Transfer-Encoding fields that is neither chunked nor
// identity (gzip, deflate, compress ...), or nullopt. Each field is a comma-separated list of
// codings, each perhaps with parameters (";q=1").
std::optional<std::string> unsupported_transfer_coding(const http::fields& fields) {
  const auto [first, last] = fields.equal_range(http::field::transfer_encoding);
  for (auto field = first; field != last; ++field) {
    std::string_view rest = field->value();
    while (!rest.empty()) {
      const size_t comma = std::min(rest.find(','), rest.size());
      std::string_view coding = rest.substr(0, std::min(rest.find(';'), comma));
      rest.remove_prefix(std::min(comma + 1, rest.size()));
      while (!coding.empty() && (coding.front() == ' ' || coding.front() == '\t')) {
        coding.remove_prefix(1);
      }
      while (!coding.empty() && (coding.back() == ' ' || coding.back() == '\t')) {
        coding.remove_suffix(1);
      }
      if (coding.empty() || beast::iequals(coding, "chunked") ||
          beast::iequals(coding, "identity")) {
        continue;
      }
      return std::string(coding);
    }
  }
  return std::nullopt;
}

class Session;

class HttpServerImpl final : public HttpServer {
 public:
  explicit HttpServerImpl(serving::ServingCore& engine)
      : engine_(engine), acceptor_(net::make_strand(ioc_)) {}
  ~HttpServerImpl() override { shutdown(); }

  Status listen();
  int port() const override { return port_; }
  void shutdown() override;

  serving::ServingCore& engine() { return engine_; }
  bool stopping() const { return stopping_.load(); }
  const std::shared_ptr<NotifyGate>& gate() const { return gate_; }
  void remove(Session* session);

 private:
  void accept();
  // Under mutex_: why a new connection from `client` is refused (nullopt: admitted); at the
  // connection limit it reclaims an idle connection if there is one.
  std::optional<scheduler::EngineError> admit(const std::string& client);

  serving::ServingCore& engine_;
  std::shared_ptr<NotifyGate> gate_ = std::make_shared<NotifyGate>();
  std::atomic<bool> stopping_{false};
  bool shut_down_ = false;  // guarded by mutex_
  // Live sessions (they unregister in their destructors, possibly inside ~io_context: declared
  // before ioc_ so they outlive it).
  std::mutex mutex_;
  std::condition_variable sessions_gone_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;
  std::unordered_map<std::string, int32_t> connections_by_client_;  // peer address -> count

  net::io_context ioc_{kNumIoThreads};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  tcp::acceptor acceptor_;
  net::steady_timer accept_retry_{acceptor_.get_executor()};
  std::vector<std::thread> threads_;
  int port_ = 0;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `refusal`: why the connection is over a limit, answered to its first request.
  Session(tcp::socket socket, HttpServerImpl& server, std::string client,
          std::optional<scheduler::EngineError> refusal)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        server_(server),
        engine_(server.engine()),
        client_(std::move(client)),
        refusal_(std::move(refusal)) {}

  ~Session() {
    if (gen_) {
      gen_->info.events->set_listener(nullptr);
      if (!gen_->finished) engine_.abort(gen_->info.id);
    }
    server_.remove(this);
  }

  net::any_io_executor executor() { return socket_.get_executor(); }
  const std::string& client() const { return client_; }

  // Any thread (the acceptor, under the server's mutex). idle(): the connection waits for a
  // request with nothing of one received, and no one claimed it; claim(): take it to make room
  // (true for one caller).
  bool idle() const { return idle_.load() && !claimed_.load(); }
  bool claim() { return idle_.load() && !claimed_.exchange(true); }
  // On the strand, after claim_if_idle(): closes the connection if it is still idle.
  void close_if_idle() {
    if (phase_ == Phase::kReading && idle_) {
      close();
    } else {
      claimed_ = false;  // it took a request meanwhile: it stays, and may be claimed later
    }
  }

  void start() {
    net::dispatch(executor(), [self = shared_from_this()] { self->read_request(); });
  }

  // On the strand: the server stops. Idle connections close; a response in progress finishes,
  // then its connection closes.
  void on_shutdown() {
    keep_alive_ = false;
    if (phase_ == Phase::kReading) close();
  }

 private:
  enum class Phase : uint8_t { kReading, kResponding, kLingering, kClosed };
  enum class TimerUse : uint8_t { kNone, kRead, kWrite, kLinger };
  enum class AfterWatch : uint8_t { kNothing, kReadRequest, kLinger };

  struct Generation {
    HttpGeneration info;
    openai::ResponseBuilder builder;
    bool finished = false;  // the kFinished event was read
  };

  const serving::ServeConfig& config() const { return engine_.config(); }

  // ---- reading a request ----

  void read_request() {
    if (phase_ == Phase::kClosed) return;
    if (server_.stopping()) return close();
    phase_ = Phase::kReading;
    timed_out_ = false;
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(static_cast<uint64_t>(config().max_body_bytes));
    arm_timer(TimerUse::kRead, config().client_timeout_seconds);
    if (buffer_.size() > 0) return read_header();  // a pipelined request is here already
    // Idle until the first byte of the next request: only then may the connection be reclaimed
    // at the connection limit (HttpServerImpl::admit).
    idle_ = true;
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
      self->idle_ = false;
      if (self->phase_ == Phase::kClosed) return;
      if (ec) return self->on_read_error(ec);
      self->read_header();
    });
  }

  void read_header() {
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return on_read_error(ec);
    // Beast frames chunked bodies only: under any other coding it would read an empty body and
    // take the coded bytes for the next request. 501 (RFC 9112 §6.1), and close: where the body
    // ends is unknown.
    if (const auto coding = unsupported_transfer_coding(parser_->get())) {
      keep_alive_ = false;
      phase_ = Phase::kResponding;
      return send(error_reply(
          501, "transfer coding '" + *coding + "' is not implemented (only chunked is)"));
    }
    const auto length = parser_->content_length();
    if (length && *length > static_cast<uint64_t>(config().max_body_bytes)) {
      return refuse_body_size();
    }
    const auto expect = parser_->get()[http::field::expect];
    if (beast::iequals(expect, "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(socket_, net::buffer(kContinue),
                       [self = shared_from_this()](error_code ec, size_t) {
                         if (self->phase_ == Phase::kClosed) return;
                         if (ec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, size_t) {
                       if (self->phase_ == Phase::kClosed) return;
                       self->disarm_timer();
                       if (ec) return self->on_read_error(ec);
                       self->handle();
                     });
  }

  void refuse_body_size() {
    keep_alive_ = false;
    phase_ = Phase::kResponding;
    send(error_reply(413, "the request body is over the limit of " +
                              std::to_string(config().max_body_bytes) + " bytes"));
  }

  void on_read_error(error_code ec) {
    disarm_timer();
    keep_alive_ = false;
    if (ec == net::error::operation_aborted && timed_out_) {
      phase_ = Phase::kResponding;
      return send(error_reply(408, "the request was not received within " +
                                       format_seconds(config().client_timeout_seconds)));
    }
    if (ec == http::error::body_limit) return refuse_body_size();
    if (ec.category() != http::make_error_code(http::error::bad_method).category() ||
        ec == http::error::end_of_stream) {
      return close();  // the client closed, reset, or the server is stopping
    }
    phase_ = Phase::kResponding;
    if (ec == http::error::header_limit) {
      return send(error_reply(
          431, "the request header is over " + std::to_string(kHeaderLimit) + " bytes"));
    }
    if (ec == http::error::partial_message) {
      return send(error_reply(400, "incomplete HTTP request: the client stopped sending"));
    }
    send(error_reply(400, "malformed HTTP request: " + ec.message()));
  }

  static std::string format_seconds(double seconds) {
    char text[32];
    std::snprintf(text, sizeof text, "%g s", seconds);
    return text;
  }

  // ---- answering ----

  void handle() {
    phase_ = Phase::kResponding;
    const HttpRequest& request = parser_->get();
    keep_alive_ = request.keep_alive() && !server_.stopping();
    version_ = request.version();
    if (refusal_) {
      keep_alive_ = false;
      return send(engine_error_reply(*refusal_));
    }
    HttpOutcome outcome;
    try {
      outcome = handle_http_request(request, engine_);
    } catch (const std::exception& e) {
      // Defence in depth: a request must never take the daemon down. Parse failures are 400s
      // inside handle_http_request; anything that still escapes is our bug, answered as 500.
      keep_alive_ = false;
      return send(engine_error_reply(
          {scheduler::ErrorKind::kInternal, std::string("internal error: ") + e.what()}));
    }
    if (auto* reply = std::get_if<HttpReply>(&outcome)) return send(std::move(*reply));
    start_generation(std::get<HttpGeneration>(std::move(outcome)));
  }

  void send(HttpReply reply) {
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(reply.status), version_);
    response->set(http::field::server, "lightserve");
    if (!reply.content_type.empty()) response->set(http::field::content_type, reply.content_type);
    for (const auto& [name, value] : reply.headers) response->set(name, value);
    response->body() = std::move(reply.body);
    response->keep_alive(keep_alive_);
    response->prepare_payload();
    arm_timer(TimerUse::kWrite, config().client_timeout_seconds);
    http::async_write(socket_, *response,
                      [self = shared_from_this(), response](error_code ec, size_t) {
                        if (self->phase_ == Phase::kClosed) return;
                        self->disarm_timer();
                        if (ec) return self->close();
                        self->after_response();
                      });
  }

  void after_response() {
    if (gen_) gen_->info.events->set_listener(nullptr);
    gen_.reset();
    const AfterWatch next =
        keep_alive_ && !server_.stopping() ? AfterWatch::kReadRequest : AfterWatch::kLinger;
    if (watching_) {
      after_watch_ = next;
      error_code ec;
      socket_.cancel(ec);  // the watch read completes, then goes on with `next`
      return;
    }
    if (next == AfterWatch::kReadRequest) return read_request();
    linger_close();
  }

  // ---- generations ----

  void start_generation(HttpGeneration generation) {
    const model::Tokenizer& tok = engine_.tokenizer();
    gen_.emplace(Generation{generation,
                            openai::ResponseBuilder(
                                generation.endpoint, engine_.model_info().name,
                                [&tok](int32_t id) { return tok.token_bytes(id, true); },
                                generation.want_logprobs, unix_seconds()),
                            false});
    if (generation.tool_calls) gen_->builder.enable_tool_calls();
    if (generation.stream) {
      error_code ignored;
      socket_.set_option(net::socket_base::send_buffer_size(kStreamSocketSendBuffer), ignored);
      chunked_ = version_ >= 11;
      if (!chunked_) keep_alive_ = false;
      out_ = std::string("HTTP/1.1 200 OK\r\nServer: lightserve\r\n") +
             "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n" +
             "X-Accel-Buffering: no\r\n" + (chunked_ ? "Transfer-Encoding: chunked\r\n" : "") +
             "x-request-id: " + generation.request_tag + "\r\n" + header_lines(generation.headers) +
             (keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n") + "\r\n";
    }
    // Set the listener, then pop once: events pushed before it are not announced.
    generation.events->set_listener(
        [gate = server_.gate(), executor = executor(), weak = weak_from_this()] {
          gate->post(executor, [weak] {
            if (auto self = weak.lock()) self->on_events();
          });
        });
    watch_client();
    on_events();
  }

  void on_events() {
    if (!gen_ || phase_ != Phase::kResponding) return;
    if (gen_->finished) {
      if (gen_->info.stream) pump();  // a write completed: the rest of the stream goes out
      return;
    }
    // A stream stops taking events while kStreamBufferBytes wait unsent (see the file comment).
    while (!gen_->info.stream || out_.size() < kStreamBufferBytes) {
      auto event = gen_->info.events->try_pop();
      if (!event) break;
      const bool finished = event->kind == scheduler::RequestEvent::Kind::kFinished;
      if (gen_->info.stream) {
        append_stream(gen_->builder.stream_event(*event, gen_->info.include_usage));
      } else {
        gen_->builder.add(*event);
      }
      if (finished) {
        gen_->finished = true;
        if (gen_->info.stream && chunked_) out_ += "0\r\n\r\n";
        break;
      }
    }
    if (gen_->info.stream) return pump();
    if (!gen_->finished) return;
    const auto& error = gen_->builder.error();
    HttpReply reply = error ? engine_error_reply(*error)
                            : HttpReply{200, "application/json", gen_->builder.response(), {}};
    reply.headers.emplace_back("x-request-id", gen_->info.request_tag);
    reply.headers.insert(reply.headers.end(), gen_->info.headers.begin(), gen_->info.headers.end());
    send(std::move(reply));
  }

  void append_stream(const std::string& data) {
    if (data.empty()) return;
    if (!chunked_) {
      out_ += data;
      return;
    }
    char size[20];
    std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    out_ += size;
    out_ += data;
    out_ += "\r\n";
  }

  // One write in flight: whatever accumulated since the last one goes out as one buffer.
  void pump() {
    if (writing_ || phase_ != Phase::kResponding || !gen_) return;
    if (out_.empty()) {
      if (gen_->finished) after_response();
      return;
    }
    in_flight_ = std::move(out_);
    out_.clear();
    writing_ = true;
    arm_timer(TimerUse::kWrite, config().client_timeout_seconds);
    net::async_write(socket_, net::buffer(in_flight_),
                     [self = shared_from_this()](error_code ec, size_t) {
                       self->writing_ = false;
                       if (self->phase_ == Phase::kClosed) return;
                       self->disarm_timer();
                       if (ec) return self->close();  // the client went away: abort
                       self->on_events();             // events held back while the buffer was full
                     });
  }

  // A read while the response is pending: EOF or an error means the client went away.
  void watch_client() {
    if (watching_) return;
    watching_ = true;
    socket_.async_read_some(
        buffer_.prepare(kWatchReadBytes),
        [self = shared_from_this()](error_code ec, size_t n) { self->on_watch(ec, n); });
  }

  void on_watch(error_code ec, size_t n) {
    watching_ = false;
    if (phase_ == Phase::kClosed) return;
    if (!ec) buffer_.commit(n);  // a pipelined request: kept for the next read
    const AfterWatch next = std::exchange(after_watch_, AfterWatch::kNothing);
    if (next == AfterWatch::kReadRequest) return read_request();
    if (next == AfterWatch::kLinger) return linger_close();
    if (ec == net::error::operation_aborted) return;
    if (ec) {
      if (gen_ && !gen_->finished) return close();  // aborts the request
      keep_alive_ = false;                          // the answer is on its way; close after it
      return;
    }
    if (gen_ && buffer_.size() < kMaxReadAheadBytes) watch_client();
  }

  // ---- closing ----

  // Half-close, then read and drop what the client still sends for a while, so the answer is
  // not lost to a reset when unread bytes remain (a refused body, a pipelined request).
  void linger_close() {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kLingering;
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    arm_timer(TimerUse::kLinger, std::chrono::duration<double>(kLingerTime).count());
    drain();
  }

  void drain() {
    buffer_.consume(buffer_.size());
    socket_.async_read_some(buffer_.prepare(kWatchReadBytes),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (self->phase_ == Phase::kClosed) return;
                              self->lingered_bytes_ += n;
                              if (ec || self->lingered_bytes_ > kMaxLingerBytes) {
                                return self->close();
                              }
                              self->drain();
                            });
  }

  void close() {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kClosed;
    if (gen_ && !gen_->finished) engine_.abort(gen_->info.id);
    timer_.cancel();
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

  // ---- the timer: request reads, writes, lingering ----

  void arm_timer(TimerUse use, double seconds) {
    timer_use_ = use;
    timer_.expires_after(
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
    timer_.async_wait([self = shared_from_this()](error_code ec) { self->on_timer(ec); });
  }

  void disarm_timer() {
    timer_use_ = TimerUse::kNone;
    timer_.cancel();
  }

  void on_timer(error_code ec) {
    if (ec || phase_ == Phase::kClosed || timer_.expiry() > Clock::now()) return;  // re-armed
    switch (std::exchange(timer_use_, TimerUse::kNone)) {
      case TimerUse::kNone:
        return;
      case TimerUse::kRead:
        if (buffer_.size() > 0 || parser_->got_some()) {
          timed_out_ = true;  // the read completes with operation_aborted: answer 408
          error_code ignored;
          socket_.cancel(ignored);
          return;
        }
        return close();       // an idle keep-alive connection
      case TimerUse::kWrite:  // the client stopped reading
      case TimerUse::kLinger:
        return close();
    }
  }

  static std::string header_lines(const HttpHeaders& headers) {
    std::string out;
    for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
    return out;
  }

  static int64_t unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  tcp::socket socket_;
  net::steady_timer timer_;
  HttpServerImpl& server_;
  serving::ServingCore& engine_;
  const std::string client_;                             // the peer's address
  const std::optional<scheduler::EngineError> refusal_;  // the connection came over a limit
  std::atomic<bool> idle_{false};
  std::atomic<bool> claimed_{false};

  Phase phase_ = Phase::kReading;
  TimerUse timer_use_ = TimerUse::kNone;
  AfterWatch after_watch_ = AfterWatch::kNothing;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool timed_out_ = false;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  bool watching_ = false;
  size_t lingered_bytes_ = 0;

  std::optional<Generation> gen_;
  bool chunked_ = false;
  bool writing_ = false;
  std::string out_;        // SSE bytes not yet written
  std::string in_flight_;  // the bytes of the write in flight
};

Status HttpServerImpl::listen() {
  const serving::ServeConfig& config = engine_.config();
  const std::string where = config.host + ":" + std::to_string(config.http_port);
  error_code ec;
  tcp::resolver resolver(ioc_);
  const auto endpoints =
      resolver.resolve(config.host, std::to_string(config.http_port), tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) return Error{"cannot resolve " + where + ": " + ec.message()};
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Error{"cannot listen on " + where + ": " + ec.message()};
  port_ = acceptor_.local_endpoint().port();
  work_.emplace(ioc_.get_executor());
  net::dispatch(acceptor_.get_executor(), [this] { accept(); });
  for (int i = 0; i < kNumIoThreads; ++i) threads_.emplace_back([this] { ioc_.run(); });
  return Status::Ok();
}

void HttpServerImpl::accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
    if (!acceptor_.is_open() || stopping_) return;
    if (!ec) {
      error_code peer_ec;
      const auto peer = socket.remote_endpoint(peer_ec);
      std::string client = peer_ec ? std::string("unknown") : peer.address().to_string();
      std::shared_ptr<Session> session;
      {
        std::lock_guard lock(mutex_);
        auto refusal = admit(client);
        ++connections_by_client_[client];
        session = std::make_shared<Session>(std::move(socket), *this, std::move(client),
                                            std::move(refusal));
        sessions_.emplace(session.get(), session);
      }
      session->start();
      return accept();
    }
    // Out of descriptors or a similar failure: try again shortly rather than spin.
    accept_retry_.expires_after(kAcceptRetryDelay);
    accept_retry_.async_wait([this](error_code) {
      if (acceptor_.is_open() && !stopping_) accept();
    });
  });
}

std::optional<scheduler::EngineError> HttpServerImpl::admit(const std::string& client) {
  const serving::ServeConfig& config = engine_.config();
  const auto mine = connections_by_client_.find(client);
  const int32_t held = mine == connections_by_client_.end() ? 0 : mine->second;
  if (config.max_connections_per_client > 0 && held >= config.max_connections_per_client) {
    return scheduler::EngineError{scheduler::ErrorKind::kResourceExhausted,
                                  "too many open connections from " + client + " (the limit is " +
                                      std::to_string(config.max_connections_per_client) +
                                      " per client); retry later"};
  }
  if (static_cast<int64_t>(sessions_.size()) < config.max_connections) return std::nullopt;
  // Full: take an idle connection of the client holding the most. The count goes over the limit
  // until the victim's close completes (moments), and each new connection takes one victim.
  // Raw pointers: a session stays alive while it is in sessions_ (it leaves in its destructor,
  // under mutex_), and no shared_ptr may die here (its destructor would take mutex_ again).
  std::vector<std::pair<int32_t, Session*>> idle;
  for (const auto& [session, weak] : sessions_) {
    if (session->idle()) idle.emplace_back(connections_by_client_[session->client()], session);
  }
  std::stable_sort(idle.begin(), idle.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [count, victim] : idle) {
    if (!victim->claim()) continue;
    net::post(victim->executor(), [weak = sessions_.at(victim)] {
      if (auto live = weak.lock()) live->close_if_idle();
    });
    return std::nullopt;
  }
  return scheduler::EngineError{scheduler::ErrorKind::kUnavailable,
                                "too many open connections (the limit is " +
                                    std::to_string(config.max_connections) + "); retry later"};
}

void HttpServerImpl::remove(Session* session) {
  std::lock_guard lock(mutex_);
  if (const auto it = connections_by_client_.find(session->client());
      it != connections_by_client_.end() && --it->second <= 0) {
    connections_by_client_.erase(it);
  }
  sessions_.erase(session);
  if (sessions_.empty()) sessions_gone_.notify_all();
}

void HttpServerImpl::shutdown() {
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(mutex_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
    for (auto& [ptr, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  if (threads_.empty()) return;  // never listened
  net::post(acceptor_.get_executor(), [this] {
    error_code ec;
    acceptor_.close(ec);
    accept_retry_.cancel();
  });
  for (auto& s : live) net::post(s->executor(), [s] { s->on_shutdown(); });
  live.clear();
  {
    std::unique_lock lock(mutex_);
    sessions_gone_.wait_for(lock, kShutdownGrace, [this] { return sessions_.empty(); });
  }
  gate_->close();
  work_.reset();
  ioc_.stop();  // sessions still open after the grace period are dropped with the context
  for (auto& t : threads_) t.join();
}

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::start(serving::ServingCore& engine) {
  auto server = std::make_unique<HttpServerImpl>(engine);
  if (Status s = server->listen(); !s) return Error{s.message()};
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace lightserve::frontends
