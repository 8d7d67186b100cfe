// A tiny blocking HTTP/1.1 client over POSIX sockets for the HTTP frontend's tests: whole
// requests, raw bytes (garbage, half requests, stalls), keep-alive, Content-Length and chunked
// responses, and SSE parsing; and the fixture that runs one daemon per test suite. Test code
// only: timeouts instead of error recovery.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/daemon_process.h"

namespace lightserve::testing {

struct HttpResponse {
  int status = 0;                              // 0: no response (closed, timed out, malformed)
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // de-chunked
  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

// One connection. Not thread-safe.
class HttpConnection {
 public:
  // `from`: a loopback source address (e.g. "127.0.0.2": another client to the server);
  // `receive_buffer`: SO_RCVBUF in bytes before connecting (a slow reader's small window).
  explicit HttpConnection(int port, double timeout_seconds = 60, const char* from = nullptr,
                          int receive_buffer = 0)
      : timeout_(timeout_seconds) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    if (from != nullptr) {
      sockaddr_in source{};
      source.sin_family = AF_INET;
      ::inet_pton(AF_INET, from, &source.sin_addr);
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) close();
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) close();
    const int one = 1;
    if (fd_ >= 0) ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~HttpConnection() { close(); }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  bool connected() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  bool send_raw(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  static std::string format_request(const std::string& method, const std::string& path,
                                    const std::string& body,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    bool with_content_length = true) {
    std::string out = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
    if (with_content_length && (!body.empty() || method == "POST")) {
      out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    return out + "\r\n" + body;
  }

  HttpResponse request(const std::string& method, const std::string& path,
                       const std::string& body = "",
                       std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (!send_raw(format_request(method, path, body, headers))) return {};
    return read_response();
  }

  // Reads bytes until `pred(buffered)` or the timeout / close; returns whether pred held.
  template <typename Pred>
  bool read_until(Pred pred) {
    while (!pred(buffer_)) {
      if (!fill()) return false;
    }
    return true;
  }

  // The response's status line and headers, leaving the body in the buffer.
  std::optional<HttpResponse> read_head() {
    if (!read_until([](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; })) {
      return std::nullopt;
    }
    const size_t end = buffer_.find("\r\n\r\n");
    std::istringstream head(buffer_.substr(0, end));
    buffer_.erase(0, end + 4);
    HttpResponse r;
    std::string line;
    std::getline(head, line);
    if (line.rfind("HTTP/1.", 0) != 0 || line.size() < 12) return std::nullopt;
    r.status = std::atoi(line.c_str() + 9);
    while (std::getline(head, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      size_t v = colon + 1;
      while (v < line.size() && line[v] == ' ') ++v;
      r.headers[name] = line.substr(v);
    }
    if (r.status == 100) return read_head();  // interim 100 Continue
    return r;
  }

  // Reads one chunk of a chunked body; nullopt on error, "" for the last chunk.
  std::optional<std::string> read_chunk() {
    if (!read_until([](const std::string& b) { return b.find("\r\n") != std::string::npos; })) {
      return std::nullopt;
    }
    const size_t eol = buffer_.find("\r\n");
    const size_t size = std::strtoul(buffer_.substr(0, eol).c_str(), nullptr, 16);
    if (!read_until([&](const std::string& b) { return b.size() >= eol + 2 + size + 2; })) {
      return std::nullopt;
    }
    std::string data = buffer_.substr(eol + 2, size);
    buffer_.erase(0, eol + 2 + size + 2);
    return data;
  }

  HttpResponse read_response() {
    std::optional<HttpResponse> r = read_head();
    if (!r) return {};
    if (r->header("transfer-encoding") == "chunked") {
      while (true) {
        std::optional<std::string> chunk = read_chunk();
        if (!chunk) return {};
        if (chunk->empty()) break;
        r->body += *chunk;
      }
    } else if (!r->header("content-length").empty()) {
      const size_t length = std::stoul(r->header("content-length"));
      if (!read_until([&](const std::string& b) { return b.size() >= length; })) return {};
      r->body = buffer_.substr(0, length);
      buffer_.erase(0, length);
    } else {
      while (fill()) {
      }
      r->body = std::move(buffer_);
      buffer_.clear();
    }
    return *r;
  }

  // True when the server closed the connection (EOF or reset) within the timeout.
  bool wait_closed(double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    char scratch[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd_, scratch, sizeof scratch, 0);
      if (n <= 0) return true;
      buffer_.append(scratch, static_cast<size_t>(n));
    }
    return false;
  }

  const std::string& buffered() const { return buffer_; }

 private:
  bool fill() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout_ * 1000)) <= 0) return false;
    char scratch[16384];
    const ssize_t n = ::recv(fd_, scratch, sizeof scratch, 0);
    if (n <= 0) return false;
    buffer_.append(scratch, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  double timeout_;
  std::string buffer_;
};

// The `data:` payloads of an SSE body, in order ("[DONE]" kept as text). `framing_ok` turns
// false when an event is not exactly "data: ...\n\n".
inline std::vector<std::string> sse_data(const std::string& body, bool* framing_ok = nullptr) {
  std::vector<std::string> out;
  bool ok = true;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      ok = false;
      break;
    }
    const std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) != 0 || event.find('\n') != std::string::npos) ok = false;
    out.push_back(event.substr(std::min<size_t>(6, event.size())));
    pos = end + 2;
  }
  if (framing_ok != nullptr) *framing_ok = ok;
  return out;
}

// The value of the first sample of `name` in Prometheus text, or nullopt.
inline std::optional<double> metric_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    const char next = line[name.size()];
    if (next != '{' && next != ' ') continue;
    return std::strtod(line.substr(line.rfind(' ') + 1).c_str(), nullptr);
  }
  return std::nullopt;
}

// One `lightserve serve` per test suite (its model load is the slow part), started with
// Suite::daemon_args() and stopped with SIGTERM (exit 0 expected). Tests skip without the model.
template <typename Suite>
class DaemonSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::filesystem::exists(LIGHTSERVE_TEST_MODEL)) {
      daemon_ = new DaemonProcess(DaemonProcess::start(Suite::daemon_args()));
    }
  }
  static void TearDownTestSuite() {
    if (daemon_ != nullptr && daemon_->ok()) {
      EXPECT_EQ(daemon_->stop(SIGTERM), 0) << daemon_->stderr_text();
    }
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    if (!std::filesystem::exists(LIGHTSERVE_TEST_MODEL)) {
      GTEST_SKIP() << "model file absent: " << LIGHTSERVE_TEST_MODEL;
    }
    ASSERT_NE(daemon_, nullptr);
    ASSERT_TRUE(daemon_->ok()) << daemon_->error();
  }
  static int port() { return daemon_->http_port(); }

  // Polls /metrics until no request runs or waits and no KV is held, or `seconds` pass. (The
  // gauges are published after each engine step, a moment after the step's events.)
  static bool wait_idle(double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (true) {
      HttpConnection c(port());
      const std::string text = c.request("GET", "/metrics").body;
      if (metric_value(text, "lightserve_num_requests_running") == 0.0 &&
          metric_value(text, "lightserve_num_requests_waiting") == 0.0 &&
          metric_value(text, "lightserve_kv_cache_usage_perc") == 0.0) {
        return true;
      }
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  static inline DaemonProcess* daemon_ = nullptr;
};

}  // namespace lightserve::testing
