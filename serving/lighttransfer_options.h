// LightTransfer settings as a user writes them (config keys lighttransfer.*, and the flags
// --lt-mode, --lazy-fraction, --lt-score, --sink, --window, --w-last, --plan, --lt-seed of every
// subcommand), before they are checked against a model. What the user leaves unset comes from the
// calibrated plan shipped for the model (docs/plans, found by the model's name), whose lazy
// fraction and laziness score `lightserve calibrate --quality` validated against full attention.
#pragma once

#include <string>

#include "model/config.h"
#include "model/lighttransfer.h"

namespace lightserve::serving {

// Where the shipped plans are: $LIGHTSERVE_PLAN_DIR, else the source tree's docs/plans.
std::string default_plan_dir();

// The plan file in `dir` calibrated for `config` (same general.name and layer count), or "".
std::string find_plan_for(const model::LlamaConfig& config, const std::string& dir);

struct LightTransferOptions {
  static constexpr double kFromPlan = -1.0;  // lazy_fraction unset
  std::string mode = "online";
  double lazy_fraction = kFromPlan;  // kFromPlan: the plan's validated fraction, else 0.5
  std::string score;                 // "": the plan's score, else mean
  int32_t sink = 4;
  int32_t window = 1020;
  int32_t w_last = 16;
  uint64_t seed = 0;
  std::string plan;  // "": the shipped plan for the model, if any; "none": no plan

  struct Resolved {
    model::LightTransferSettings settings;
    std::string plan_path;  // the plan used, or ""
    std::string summary;    // one line: what runs and why (start-up message)
    std::string warning;    // a fraction above the validated one, or ""
  };
  // The settings these options name for `config` (plan loaded, unset values taken from it), or
  // an Error naming the bad option.
  Result<Resolved> resolve(const model::LlamaConfig& config) const;
  Result<model::LightTransferSettings> settings(const model::LlamaConfig& config) const;
};

}  // namespace lightserve::serving
