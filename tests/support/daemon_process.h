// Runs the real daemon (`lightserve serve ...`) as a child process for the integration tests
// (docs/design.md §10): ephemeral ports, the ports file read back, stderr captured to a file, and a
// stop that signals and reaps the child. Generic: the gRPC and HTTP tests both use it.
//
//   auto daemon = DaemonProcess::start({"--model", model, "--kv-budget", "64MiB"});
//   if (!daemon.ok()) FAIL() << daemon.error();
//   ... connect to daemon.grpc_port() / daemon.http_port() ...
//   EXPECT_EQ(daemon.stop(SIGTERM), 0);
//
// start() adds `--http-port 0 --grpc-port 0 --ports-file F` unless the arguments already name
// them. Not thread-safe; one owner. The destructor kills a child that is still running.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/cli_runner.h"

extern char** environ;

namespace lightserve::testing {

class DaemonProcess {
 public:
  DaemonProcess() = default;
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  DaemonProcess(DaemonProcess&& other) noexcept { *this = std::move(other); }
  DaemonProcess& operator=(DaemonProcess&& other) noexcept {
    if (this != &other) {
      kill_and_reap();
      pid_ = std::exchange(other.pid_, -1);
      http_port_ = other.http_port_;
      grpc_port_ = other.grpc_port_;
      exit_status_ = other.exit_status_;
      dir_ = std::exchange(other.dir_, {});
      error_ = std::move(other.error_);
    }
    return *this;
  }
  ~DaemonProcess() {
    kill_and_reap();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  // Spawns `lightserve serve ARGS` and waits until it has written its ports file (or exited, or
  // `timeout_seconds` passed: then ok() is false, error() says why and quotes stderr).
  // `extra_env` ("NAME=value") is added to this process's environment for the child.
  static DaemonProcess start(std::vector<std::string> args, double timeout_seconds = 120,
                             std::vector<std::string> extra_env = {}) {
    namespace fs = std::filesystem;
    static int num_started = 0;
    DaemonProcess d;
    d.dir_ = fs::temp_directory_path() / ("lightserve_daemon_" + std::to_string(::getpid()) + "_" +
                                          std::to_string(num_started++));
    fs::create_directories(d.dir_);
    const std::string ports_file = (d.dir_ / "ports.json").string();
    const auto named = [&](const char* flag) {
      return std::find(args.begin(), args.end(), flag) != args.end();
    };
    if (!named("--http-port")) args.insert(args.end(), {"--http-port", "0"});
    if (!named("--grpc-port")) args.insert(args.end(), {"--grpc-port", "0"});
    if (!named("--ports-file")) args.insert(args.end(), {"--ports-file", ports_file});

    std::vector<std::string> argv_strings = {kLightserveBinary, "serve"};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, d.stdout_path().c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, d.stderr_path().c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = -1;
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
    for (std::string& e : extra_env) env.push_back(e.data());
    env.push_back(nullptr);
    const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      d.error_ = "posix_spawn " + kLightserveBinary + " failed: " + std::strerror(rc);
      return d;
    }
    d.pid_ = pid;

    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(d.pid_, &status, WNOHANG) == d.pid_) {
        d.pid_ = -1;
        d.error_ = "lightserve serve exited (" + describe(status) +
                   ") before listening; stderr:\n" + d.stderr_text();
        return d;
      }
      if (d.read_ports(ports_file)) return d;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    d.error_ = "lightserve serve wrote no ports file within " + std::to_string(timeout_seconds) +
               " s; stderr:\n" + d.stderr_text();
    d.kill_and_reap();
    return d;
  }

  bool ok() const { return error_.empty() && pid_ > 0; }
  const std::string& error() const { return error_; }
  pid_t pid() const { return pid_; }
  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  std::string grpc_target() const { return "127.0.0.1:" + std::to_string(grpc_port_); }

  std::string stdout_path() const { return (dir_ / "stdout.txt").string(); }
  std::string stderr_path() const { return (dir_ / "stderr.txt").string(); }
  std::string stderr_text() const {
    std::ifstream in(stderr_path());
    return {std::istreambuf_iterator<char>(in), {}};
  }

  // Whether the child is still running (it is reaped when it has exited).
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = status;
      return false;
    }
    return true;
  }

  // Sends `signal` and waits up to `timeout_seconds` for the exit, then SIGKILLs. Returns the exit
  // code, or −(signal number) when a signal ended the child, or −1000 when it was not running.
  int stop(int signal = SIGTERM, double timeout_seconds = 60) {
    if (pid_ <= 0) return exit_status_ ? decode(*exit_status_) : -1000;
    ::kill(pid_, signal);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = status;
        return decode(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill_and_reap();
    return exit_status_ ? decode(*exit_status_) : -1000;
  }

 private:
  static int decode(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return -1000;
  }
  static std::string describe(int status) {
    if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
    return "status " + std::to_string(status);
  }

  // The daemon writes the file once listening; a read may still see it half written: retry.
  bool read_ports(const std::string& path) {
    std::ifstream in(path);
    if (!in) return false;
    const std::string text{std::istreambuf_iterator<char>(in), {}};
    const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object()) return false;
    http_port_ = json.value("http", -1);
    grpc_port_ = json.value("grpc", -1);
    return true;
  }

  void kill_and_reap() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exit_status_ = status;
    pid_ = -1;
  }

  pid_t pid_ = -1;
  int http_port_ = -1;
  int grpc_port_ = -1;
  std::optional<int> exit_status_;
  std::filesystem::path dir_;
  std::string error_;
};

}  // namespace lightserve::testing
