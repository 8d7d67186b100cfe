#include "serving/lighttransfer_options.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <vector>

namespace lightserve::serving {

std::string default_plan_dir() {
  if (const char* env = std::getenv("LIGHTSERVE_PLAN_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return LIGHTSERVE_PLAN_DIR;
}

std::string find_plan_for(const model::LlamaConfig& config, const std::string& dir) {
  if (config.name.empty()) return "";
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());  // deterministic when several match
  for (const std::string& path : files) {
    auto plan = model::LtPlan::load(path);
    if (plan && plan->model == config.name && plan->num_layers == config.num_layers) return path;
  }
  return "";
}

namespace {

std::string format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

// "passkey 98.0% vs full 100.0% at 4096, perplexity +0.8%" for a measured configuration.
std::string describe_point(const model::LtPlan& plan, const model::LtQualityPoint& p) {
  const model::LtQualityPoint* full = nullptr;
  for (const model::LtQualityPoint& q : plan.quality) {
    if (q.score.empty()) full = &q;
  }
  std::string out = "passkey";
  for (size_t i = 0; i < p.passkey_lengths.size(); ++i) {
    out += format(" %.0f%%", p.passkey_accuracy[i]);
    if (full != nullptr && i < full->passkey_accuracy.size())
      out += format(" (full %.0f%%)", full->passkey_accuracy[i]);
    out += " at " + std::to_string(p.passkey_lengths[i]);
    if (i + 1 < p.passkey_lengths.size()) out += ",";
  }
  if (full != nullptr && full->ppl > 0)
    out += format(", perplexity %+.2f%%", 100 * (p.ppl / full->ppl - 1));
  return out;
}

const model::LtQualityPoint* find_point(const model::LtPlan& plan, model::LazyScore score,
                                        double fraction) {
  for (const model::LtQualityPoint& p : plan.quality) {
    if (p.score == model::to_string(score) && std::abs(p.lazy_fraction - fraction) < 1e-9)
      return &p;
  }
  return nullptr;
}

}  // namespace

Result<LightTransferOptions::Resolved> LightTransferOptions::resolve(
    const model::LlamaConfig& config) const {
  Resolved r;
  model::LightTransferSettings& s = r.settings;
  auto parsed = model::parse_lt_mode(mode);
  if (!parsed) return parsed.error();
  s.mode = parsed.value();
  s.sink = sink;
  s.window = window;
  s.w_last = w_last;
  s.seed = seed;
  if (plan != "none") {
    r.plan_path = plan.empty() ? find_plan_for(config, default_plan_dir()) : plan;
  }
  if (!r.plan_path.empty()) {
    auto loaded = model::LtPlan::load(r.plan_path);
    if (!loaded) return loaded.error();
    s.plan = std::move(loaded).value();
  }
  const bool validated = s.plan && s.plan->validated_fraction >= 0.0;
  if (!score.empty()) {
    auto sc = model::parse_lazy_score(score);
    if (!sc) return sc.error();
    s.score = sc.value();
  } else if (s.plan) {
    s.score = s.plan->score;
  }
  const bool fraction_set = lazy_fraction != kFromPlan;
  if (fraction_set) {
    s.lazy_fraction = lazy_fraction;
  } else if (validated) {
    s.lazy_fraction = s.plan->validated_fraction;
  }
  if (Status st = s.validate(config.num_layers); !st) return Error{st.message()};

  r.summary = "LightTransfer: mode " + std::string(model::to_string(s.mode)) + ", score " +
              std::string(model::to_string(s.score)) +
              format(", lazy fraction %.2f", s.lazy_fraction) + ", sink " + std::to_string(s.sink) +
              ", window " + std::to_string(s.window) + ", w_last " + std::to_string(s.w_last);
  if (s.mode == model::LtMode::kFull || s.mode == model::LtMode::kStreaming) return r;
  const std::string set_by = fraction_set || !score.empty() ? "set by the user; " : "";
  if (!validated) {
    r.summary += " (" + set_by +
                 (s.plan           ? "the plan " + r.plan_path + " holds no quality measurement"
                  : plan == "none" ? std::string("no plan (--plan none)")
                                   : "no calibrated plan for this model in " + default_plan_dir()) +
                 ": not validated against full attention)";
    return r;
  }
  const model::LtPlan& p = *s.plan;
  const model::LtQualityPoint* chosen = find_point(p, p.score, p.validated_fraction);
  r.summary += " (" + set_by + "validated by " + r.plan_path +
               ": the largest lazy fraction, score " + std::string(model::to_string(p.score)) +
               format(" f=%.2f, within passkey -%.0f points and perplexity +%.0f%% of full",
                      p.validated_fraction, p.bound_passkey_points, p.bound_ppl_percent);
  if (chosen != nullptr) r.summary += "; " + describe_point(p, *chosen);
  r.summary += ")";
  if (p.window != s.window || p.sink != s.sink) {
    r.warning = "warning: the plan " + r.plan_path + " was validated at sink " +
                std::to_string(p.sink) + ", window " + std::to_string(p.window) +
                "; these settings (sink " + std::to_string(s.sink) + ", window " +
                std::to_string(s.window) + ") are not validated";
  } else if (s.lazy_fraction > p.validated_fraction + 1e-9 || s.score != p.score) {
    r.warning = "warning: LightTransfer " + std::string(model::to_string(s.score)) +
                format(" f=%.2f", s.lazy_fraction) + " is not the validated " +
                std::string(model::to_string(p.score)) + format(" f=%.2f", p.validated_fraction) +
                " of " + r.plan_path;
    if (const model::LtQualityPoint* m = find_point(p, s.score, s.lazy_fraction)) {
      r.warning += " (measured: " + describe_point(p, *m) +
                   (m->within_bound ? "; within the bound)" : "; outside the bound)");
    } else if (s.lazy_fraction > p.validated_fraction + 1e-9) {
      r.warning += format(": a fraction above %.2f may lose answers", p.validated_fraction);
    }
  }
  return r;
}

Result<model::LightTransferSettings> LightTransferOptions::settings(
    const model::LlamaConfig& config) const {
  auto r = resolve(config);
  if (!r) return r.error();
  return std::move(r.value().settings);
}

}  // namespace lightserve::serving
