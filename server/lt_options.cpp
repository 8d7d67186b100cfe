#include "server/lt_options.h"

namespace lightserve::cli {

void LtOptions::add_to(CLI::App* cmd) {
  cmd->add_option("--lt-mode", mode,
                  "LightTransfer mode: test (lazy layers chosen per request), static (from --plan), "
                  "full (no lazy layer), streaming (every layer lazy), random")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--lazy-fraction", lazy_fraction, "Fraction of layers served lazily (f)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--sink", sink, "Initial tokens a lazy layer keeps (S)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--window", window, "Recent tokens a lazy layer keeps (W)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--w-last", w_last, "Last prompt tokens whose attention scores laziness")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--plan", plan,
                  "Plan file from `lightserve calibrate` (static mode; breaks ties in test mode)")
      ->group("LightTransfer");
  cmd->add_option("--lt-seed", seed, "Seed of the random mode's lazy set")
      ->capture_default_str()
      ->group("LightTransfer");
}

Result<model::LightTransferSettings> LtOptions::settings(int32_t num_layers) const {
  model::LightTransferSettings s;
  auto parsed = model::parse_lt_mode(mode);
  if (!parsed) return parsed.error();
  s.mode = parsed.value();
  s.lazy_fraction = lazy_fraction;
  s.sink = sink;
  s.window = window;
  s.w_last = w_last;
  s.seed = seed;
  if (!plan.empty()) {
    auto loaded = model::LtPlan::load(plan);
    if (!loaded) return loaded.error();
    s.plan = std::move(loaded).value();
  }
  if (Status st = s.validate(num_layers); !st) return Error{st.message()};
  return s;
}

}  // namespace lightserve::cli
