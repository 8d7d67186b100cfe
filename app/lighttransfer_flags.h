// The LightTransfer flags shared by generate, info, eval, calibrate and bench.
#pragma once

#include <CLI/CLI.hpp>

#include "serving/lighttransfer_options.h"

namespace lightserve::cli {

// --lt-mode, --lazy-fraction, --lt-score, --sink, --window, --w-last, --plan, --lt-seed, bound to
// `o`.
void add_lighttransfer_flags(CLI::App* cmd, serving::LightTransferOptions& o);

}  // namespace lightserve::cli
