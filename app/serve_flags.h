// The flags of `lightserve serve`: one per key of the config table (serving/serve_config.h),
// plus --config FILE and --print-config. Precedence: defaults < environment < file < flags.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "serving/serve_config.h"

namespace lightserve::cli {

// Registers `--config FILE`, `--print-config` and one flag per key on `cmd`. After CLI11 has
// parsed, resolve() loads the file (when given) and then applies the flags that were given.
class ServeFlags {
 public:
  explicit ServeFlags(CLI::App* cmd);
  Result<serving::ServeConfig> resolve() const;
  bool print_config() const { return print_config_; }

 private:
  CLI::App* cmd_;
  std::string config_path_;
  bool print_config_ = false;
  std::vector<std::string> values_;  // one per config_keys() entry, as typed
};

}  // namespace lightserve::cli
