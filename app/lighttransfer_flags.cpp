#include "app/lighttransfer_flags.h"

namespace lightserve::cli {

void add_lighttransfer_flags(CLI::App* cmd, serving::LightTransferOptions& o) {
  cmd->add_option("--lt-mode", o.mode,
                  "LightTransfer mode: online (lazy layers chosen per request; `test` is its old "
                  "name), static (from --plan), "
                  "full (no lazy layer), streaming (every layer lazy), random")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--lazy-fraction", o.lazy_fraction,
                  "Fraction of layers served lazily (f); default: the plan's validated fraction, "
                  "else 0.5")
      ->group("LightTransfer");
  cmd->add_option("--lt-score", o.score,
                  "Laziness score of online mode: mean (the paper's: averaged over heads), "
                  "head-min (the least lazy head), head-min-last (the least lazy head at the final "
                  "query); default: the plan's, else mean")
      ->group("LightTransfer");
  cmd->add_option("--sink", o.sink, "Initial tokens a lazy layer keeps (S)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--window", o.window, "Recent tokens a lazy layer keeps (W)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--w-last", o.w_last, "Last prompt tokens whose attention scores laziness")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option(
         "--plan", o.plan,
         "Plan file from `lightserve calibrate` (static mode; breaks ties in online mode); "
         "default: the one shipped for the model (docs/plans), none: no plan")
      ->group("LightTransfer");
  cmd->add_option("--lt-seed", o.seed, "Seed of the random mode's lazy set")
      ->capture_default_str()
      ->group("LightTransfer");
}

}  // namespace lightserve::cli
