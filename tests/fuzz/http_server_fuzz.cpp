// libFuzzer target for the HTTP frontend's request path (frontends/http/http_server.cpp): raw
// bytes, written to a real HttpServer over a real ServingCore (the default model, loaded once in
// LLVMFuzzerInitialize, on an ephemeral port of 127.0.0.1) through a TCP socket, so the Beast
// parser, the session's header/body/limit/timeout handling, the routes and the generations all
// run as in the daemon. Nothing in the server is changed or stubbed for it.
//
// Input: one flags byte, then the bytes sent. Flag 1: half-close right after sending (partial
// requests, clients that go away mid-generation); otherwise the socket stays open until the
// server closes it or falls quiet (a kept-alive connection), then it is half-closed.
// What must hold: the process survives (no crash, no UB, no leak, no exception), every response
// begins with an HTTP/1.x status line, no 500 (an exception escaped a handler: our bug), and the
// server closes or answers within a deadline (a hang is a finding).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "base/check.h"
#include "frontends/http/http_server.h"
#include "serving/serve_config.h"
#include "serving/serving_core.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using Clock = std::chrono::steady_clock;
using lightserve::frontends::HttpServer;
using lightserve::serving::ServeConfig;
using lightserve::serving::ServingCore;

constexpr auto kFirstByteWait = std::chrono::milliseconds(1500);  // a prefill may come first
constexpr auto kQuietWait = std::chrono::milliseconds(60);        // after a response: kept alive
constexpr auto kDeadline = std::chrono::seconds(30);              // longer: a hang

// Leaked on purpose: they serve until the process exits.
ServingCore* core = nullptr;
HttpServer* server = nullptr;

int connect_to_server() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  LS_CHECK(fd >= 0) << "socket()";
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(server->port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  LS_CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0)
      << "cannot connect to the HTTP server";
  return fd;
}

// Reads until EOF (true) or until the server falls quiet (false): nothing for `first_wait` before
// the first byte, or for `quiet` after one. Past the deadline it is a hang.
bool read_until_eof_or_quiet(int fd, std::string& received, std::chrono::milliseconds first_wait,
                             std::chrono::milliseconds quiet, Clock::time_point deadline) {
  char chunk[16384];
  const size_t before = received.size();
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const auto wait = received.size() > before ? quiet : first_wait;
    const int ready = ::poll(&p, 1, static_cast<int>(wait.count()));
    LS_CHECK(Clock::now() < deadline)
        << "the server neither answered nor closed within " << kDeadline.count() << " s";
    if (ready == 0) return false;
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return true;  // EOF or a reset: the server closed
    received.append(chunk, static_cast<size_t>(n));
  }
}

void check_responses(std::string_view received) {
  if (received.empty()) return;  // closed without an answer (e.g. a client that sent nothing)
  LS_CHECK(received.substr(0, 7) == "HTTP/1.")
      << "not an HTTP response: " << received.substr(0, 64);
  for (size_t at = received.find("HTTP/1."); at != std::string_view::npos;
       at = received.find("HTTP/1.", at + 1)) {
    // Only status lines: the start, or right after a blank line that ended a message.
    if (at != 0 && received.substr(at >= 4 ? at - 4 : 0, 4) != "\r\n\r\n") continue;
    LS_CHECK(received.substr(at + 8, 5) != " 500 ") << "a 500 (an exception escaped a handler):\n"
                                                    << received.substr(at, 400);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  ServeConfig config;
  config.model_path = lightserve::fuzzing::model_path_or_exit();
  config.threads = 1;  // the fuzzer's own thread does the rest; the build machines have 2 cores
  config.http_port = 0;
  config.grpc_port = -1;
  config.kv_budget_bytes = 32ll << 20;
  config.context = 256;
  config.max_prompt_tokens = 128;
  config.max_tokens_limit = 8;
  config.default_max_tokens = 4;
  config.max_body_bytes = 8192;
  config.client_timeout_seconds = 1;
  config.max_connections = 4;
  config.max_running = 4;
  config.max_waiting = 8;
  const lightserve::Status finished = lightserve::serving::finish_config(config);
  LS_CHECK(finished.ok()) << finished.message();
  auto started = ServingCore::start(config, nullptr);
  LS_CHECK(started.ok()) << started.error().message;
  core = std::move(started).value().release();
  auto http = HttpServer::start(*core);
  LS_CHECK(http.ok()) << http.error().message;
  server = std::move(http).value().release();
  std::fprintf(stderr, "http_server_fuzz: serving on 127.0.0.1:%d\n", server->port());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool half_close_at_once = (data[0] & 1) != 0;
  const int fd = connect_to_server();
  const Clock::time_point deadline = Clock::now() + kDeadline;
  // The server may answer (and close) before reading everything: a failed send is fine.
  size_t sent = 0;
  while (sent < size - 1) {
    const ssize_t n = ::send(fd, data + 1 + sent, size - 1 - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string received;
  bool closed = false;
  if (!half_close_at_once) {
    closed = read_until_eof_or_quiet(fd, received, kFirstByteWait, kQuietWait, deadline);
  }
  if (!closed) {
    ::shutdown(fd, SHUT_WR);
    const auto second = std::chrono::milliseconds(1000);
    while (!read_until_eof_or_quiet(fd, received, second, second, deadline)) {
    }
  }
  ::close(fd);
  check_responses(received);
  return 0;
}
