// `lightserve serve`: the daemon. Loads the model, prints the capacity summary, serves gRPC and
// HTTP (OpenAI API, probes, /metrics) from one process, and drains on SIGTERM / SIGINT:
// /ready turns 503 and gRPC health NOT_SERVING, new requests get 503 / UNAVAILABLE, in-flight ones
// finish (up to shutdown.drain_timeout_seconds; a second signal cuts the wait short), then the
// rest are aborted and the process exits 0.
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "app/serve_flags.h"
#include "app/subcommands.h"
#include "frontends/grpc/grpc_server.h"
#include "frontends/http/http_server.h"
#include "serving/serving_core.h"

namespace lightserve::cli {
namespace {

// Writes {"http": P, "grpc": P} atomically (tests and scripts poll for it).
bool write_ports_file(const std::string& path, int http_port, int grpc_port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"http\": " << http_port << ", \"grpc\": " << grpc_port << "}\n";
    if (!out) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

// Whether `port` on `host` can be bound now (as the servers will, with SO_REUSEADDR), so that a
// taken port is a usage error before the model loads rather than a failure after it. The servers
// bind for real later; this only moves the common mistake (a second daemon, a stale one) forward.
Status check_port_free(const std::string& host, int port, const char* flag) {
  if (port <= 0) return Status::Ok();  // off, or an ephemeral port: always available
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string where = host + ":" + std::to_string(port);
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
      rc != 0 || found == nullptr) {
    return Error{std::string("server.host: cannot resolve ") + where + ": " + gai_strerror(rc)};
  }
  int error = 0;
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  if (fd < 0) {
    error = errno;
  } else {
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, found->ai_addr, found->ai_addrlen) != 0) error = errno;
    close(fd);
  }
  freeaddrinfo(found);
  if (error == 0) return Status::Ok();
  std::string message = std::string(flag) + " " + std::to_string(port) + ": cannot listen on " +
                        where + ": " + std::strerror(error);
  if (error == EADDRINUSE) message += " (another server holds it; choose another port)";
  return Error{message};
}

// Waits up to `seconds` for one of `signals`; true when one arrived.
bool wait_signal(const sigset_t& signals, double seconds, int* which) {
  timespec timeout{};
  timeout.tv_sec = static_cast<time_t>(seconds);
  timeout.tv_nsec = static_cast<long>((seconds - static_cast<double>(timeout.tv_sec)) * 1e9);
  const int sig = sigtimedwait(&signals, nullptr, &timeout);
  if (sig > 0 && which != nullptr) *which = sig;
  return sig > 0;
}

int run_serve(const ServeFlags& flags) {
  auto resolved = flags.resolve();
  if (!resolved) {
    std::fprintf(stderr, "error: %s\n", resolved.error().message.c_str());
    return 2;
  }
  const serving::ServeConfig& config = resolved.value();
  if (flags.print_config()) {
    std::printf("%s", serving::format_config(config).c_str());
    return 0;
  }
  // Settings the model makes impossible are usage errors too: exit 2 before any weight loads.
  if (Status s = serving::ServingCore::preflight(config); !s) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 2;
  }
  for (const auto& [port, flag] :
       {std::pair{config.http_port, "--http-port"}, std::pair{config.grpc_port, "--grpc-port"}}) {
    if (Status s = check_port_free(config.host, port, flag); !s) {
      std::fprintf(stderr, "error: %s\n", s.message().c_str());
      return 2;
    }
  }

  // Every thread started from here on inherits the blocked set; this thread takes the signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that went away is an error on its socket, not a signal

  auto started = serving::ServingCore::start(config, stderr);
  if (!started) {
    std::fprintf(stderr, "error: %s\n", started.error().message.c_str());
    return 1;
  }
  serving::ServingCore& engine = *started.value();

  std::unique_ptr<frontends::HttpServer> http;
  std::unique_ptr<frontends::GrpcServer> grpc;
  if (config.http_port >= 0) {
    auto s = frontends::HttpServer::start(engine);
    if (!s) {
      std::fprintf(stderr, "error: http: %s\n", s.error().message.c_str());
      return 1;
    }
    http = std::move(s).value();
  }
  if (config.grpc_port >= 0) {
    auto s = frontends::GrpcServer::start(engine);
    if (!s) {
      std::fprintf(stderr, "error: grpc: %s\n", s.error().message.c_str());
      if (http) http->shutdown();
      return 1;
    }
    grpc = std::move(s).value();
  }
  const int http_port = http ? http->port() : -1;
  const int grpc_port = grpc ? grpc->port() : -1;
  if (http) {
    std::fprintf(stderr, "listening: http://%s:%d (OpenAI API /v1, /health, /ready, /metrics)\n",
                 config.host.c_str(), http_port);
  }
  if (grpc) {
    std::fprintf(stderr, "listening: grpc %s:%d (lightserve.v1.Generation, health, reflection)\n",
                 config.host.c_str(), grpc_port);
  }
  std::fprintf(stderr, "serving model '%s'%s; SIGTERM drains\n", engine.model_info().name.c_str(),
               config.api_key.empty() ? "" : " (API key required)");
  if (!config.ports_file.empty() && !write_ports_file(config.ports_file, http_port, grpc_port)) {
    std::fprintf(stderr, "error: cannot write the ports file %s\n", config.ports_file.c_str());
    return 1;
  }

  // Until a signal: watch the engine, so that a failed device also turns gRPC health
  // NOT_SERVING (HTTP's /health asks the core on every probe).
  int sig = 0;
  bool reported_unhealthy = false;
  while (!wait_signal(signals, 0.25, &sig)) {
    if (!reported_unhealthy && !engine.healthy()) {
      reported_unhealthy = true;
      std::fprintf(stderr,
                   "error: the engine has failed; /health, /ready and gRPC health report "
                   "NOT_SERVING, new requests get UNAVAILABLE (restart the process)\n");
      if (grpc) grpc->set_not_serving();
    }
  }
  std::fprintf(stderr, "received %s: draining (%d in flight, up to %.0f s)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM", engine.num_in_flight(),
               config.drain_timeout_seconds);
  engine.begin_drain();
  if (grpc) grpc->set_not_serving();
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration<double>(config.drain_timeout_seconds);
  bool idle = engine.num_in_flight() == 0;
  while (!idle && std::chrono::steady_clock::now() < deadline) {
    if (wait_signal(signals, 0.05, nullptr)) {
      std::fprintf(stderr, "second signal: aborting what is left\n");
      break;
    }
    idle = engine.num_in_flight() == 0;
  }
  if (!idle) {
    std::fprintf(stderr, "drain: aborting %d request(s) still in flight\n", engine.num_in_flight());
  }
  engine.stop();  // aborts the rest; their clients get their abort while the servers still run
  if (grpc) grpc->shutdown(2.0);
  if (http) http->shutdown();
  std::fprintf(stderr, "stopped\n");
  return 0;
}

}  // namespace

void register_serve(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve the model over gRPC and an OpenAI-compatible HTTP API, with Prometheus /metrics. "
      "Settings come from --config FILE (YAML; deploy/config.yaml documents every key) and "
      "flags, which override the file.");
  static std::unique_ptr<ServeFlags> flags;
  flags = std::make_unique<ServeFlags>(cmd);
  cmd->callback([] { set_exit_code(run_serve(*flags)); });
}

}  // namespace lightserve::cli
