// LightTransfer settings as a user writes them (config keys lighttransfer.*, and the flags
// --lt-mode, --lazy-fraction, --sink, --window, --w-last, --plan, --lt-seed of every subcommand),
// before they are checked against a model.
#pragma once

#include <string>

#include "model/lighttransfer.h"

namespace lightserve::serving {

struct LightTransferOptions {
  std::string mode = "online";
  double lazy_fraction = 0.5;
  int32_t sink = 4;
  int32_t window = 1020;
  int32_t w_last = 16;
  uint64_t seed = 0;
  std::string plan;

  // The settings these options name (the plan file loaded), or an Error naming the bad option.
  Result<model::LightTransferSettings> settings(int32_t num_layers) const;
};

}  // namespace lightserve::serving
