// The LightTransfer command-line options shared by generate, info, eval and calibrate
// (--lt-mode, --lazy-fraction, --sink, --window, --w-last, --plan, --lt-seed).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "model/lighttransfer.h"

namespace lightserve::cli {

struct LtOptions {
  std::string mode = "test";
  double lazy_fraction = 0.5;
  int32_t sink = 4;
  int32_t window = 1020;
  int32_t w_last = 16;
  uint64_t seed = 0;
  std::string plan;

  void add_to(CLI::App* cmd);
  // The settings these options name (the plan file loaded), or an Error naming the bad option.
  Result<model::LightTransferSettings> settings(int32_t num_layers) const;
};

}  // namespace lightserve::cli
