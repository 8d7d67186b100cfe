#include "serving/lighttransfer_options.h"

namespace lightserve::serving {

Result<model::LightTransferSettings> LightTransferOptions::settings(int32_t num_layers) const {
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

}  // namespace lightserve::serving
