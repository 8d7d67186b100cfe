// What the benchmark programs share on their command line: flags with values read one at a time
// (a missing or malformed value is an error naming the flag, exit 2), comma lists of integers,
// and a model loaded or a clear error (exit 1).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"

namespace lightserve::bench {

class BenchArgs {
 public:
  // `usage`: the line printed for --help (exit 0) and after an unknown flag (exit 2).
  BenchArgs(int argc, char** argv, std::string usage)
      : argc_(argc), argv_(argv), usage_(std::move(usage)) {}

  // Moves to the next flag; false at the end.
  bool next(std::string* flag) {
    if (++i_ >= argc_) return false;
    *flag = flag_ = argv_[i_];
    if (flag_ == "--help" || flag_ == "-h") {
      std::printf("usage: %s\n", usage_.c_str());
      std::exit(0);
    }
    return true;
  }
  std::string value() {
    if (i_ + 1 >= argc_) fail("needs a value");
    return argv_[++i_];
  }
  int int_value() { return parse_int(value()); }
  double double_value() {
    const std::string text = value();
    try {
      size_t used = 0;
      const double v = std::stod(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    fail("takes a number, got '" + text + "'");
  }
  // "0,2,8" -> {0, 2, 8}; "" -> {} (none of that kind, e.g. runtime_bench --prefill '').
  std::vector<int> int_list() {
    const std::string text = value();
    std::vector<int> values;
    if (text.empty()) return values;
    size_t start = 0;
    while (start <= text.size()) {
      const size_t comma = std::min(text.find(',', start), text.size());
      values.push_back(parse_int(text.substr(start, comma - start)));
      start = comma + 1;
    }
    return values;
  }
  [[noreturn]] void unknown() const {
    std::fprintf(stderr, "error: unknown option %s\nusage: %s\n", flag_.c_str(), usage_.c_str());
    std::exit(2);
  }

 private:
  int parse_int(const std::string& text) const {
    try {
      size_t used = 0;
      const int v = std::stoi(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    fail("takes integers, got '" + text + "'");
  }
  [[noreturn]] void fail(const std::string& why) const {
    std::fprintf(stderr, "error: %s %s\n", flag_.c_str(), why.c_str());
    std::exit(2);
  }

  int argc_;
  char** argv_;
  std::string usage_;
  int i_ = 0;
  std::string flag_;
};

// The model at `path` on `backend`, or the loader's error on stderr and exit 1.
inline std::unique_ptr<model::LlamaModel> load_model_or_exit(const std::string& path,
                                                             kernels::Backend& backend) {
  auto loaded = model::LlamaModel::load(path, backend);
  if (!loaded) {
    std::fprintf(stderr, "error: %s\n", loaded.error().message.c_str());
    std::exit(1);
  }
  return std::move(loaded).value();
}

}  // namespace lightserve::bench
