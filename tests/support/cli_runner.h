// Runs the real `lightserve` binary as a user would, for the CLI tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace lightserve::testing {

inline const std::string kLightserveBinary = LIGHTSERVE_BINARY_DIR "/lightserve";

struct CliResult {
  int code = -1;    // exit status, −1 when it did not exit normally
  std::string out;  // stdout
  std::string err;  // stderr
};

// `command` through the shell; stdout and stderr captured separately.
inline CliResult run_command(const std::string& command_line) {
  namespace fs = std::filesystem;
  static int num_runs = 0;
  const fs::path err_file =
      fs::temp_directory_path() /
      ("lightserve_cli_err_" + std::to_string(::getpid()) + "_" + std::to_string(num_runs++));
  CliResult r;
  const std::string command = command_line + " 2>" + err_file.string();
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), {});
  fs::remove(err_file);
  return r;
}

// `lightserve ARGS`, as run_command.
inline CliResult run_lightserve(const std::string& args) {
  return run_command(kLightserveBinary + " " + args);
}

}  // namespace lightserve::testing
