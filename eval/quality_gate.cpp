// `lightserve calibrate --quality`: the quality gate of a LightTransfer plan. One passkey run and
// one perplexity run over every configuration at once (full attention, then each score × lazy
// fraction in online mode; the eval's shared prefill), then per score the largest fraction that
// stays within the bound of full attention, every smaller fraction tried passing too.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "eval/eval_tasks.h"

namespace lightserve::eval {

Status run_quality_gate(model::LlamaModel& model, const QualityGateOptions& options,
                        model::LtPlan& plan) {
  if (options.fractions.empty() || options.scores.empty())
    return Error{"the quality gate needs at least one lazy fraction and one score"};
  if (options.perplexity.lengths.size() != 1)
    return Error{"the quality gate scores perplexity at one length"};
  std::vector<double> fractions = options.fractions;
  std::sort(fractions.begin(), fractions.end());
  std::vector<EvalMode> modes;
  model::LightTransferSettings full = options.base;
  full.mode = model::LtMode::kFull;
  full.lazy_fraction = 0.0;
  modes.push_back({"full", full});
  for (model::LazyScore score : options.scores) {
    for (double f : fractions) {
      model::LightTransferSettings s = options.base;
      s.mode = model::LtMode::kOnline;
      s.score = score;
      s.lazy_fraction = f;
      char label[64];
      std::snprintf(label, sizeof label, "%s f=%.2f", std::string(model::to_string(score)).c_str(),
                    f);
      modes.push_back({label, s});
    }
  }
  auto passkey = run_passkey(model, options.passkey, modes);
  if (!passkey) return Error{"quality gate, passkey: " + passkey.error().message};
  auto ppl = run_perplexity(model, options.perplexity, modes);
  if (!ppl) return Error{"quality gate, perplexity: " + ppl.error().message};

  plan.quality.clear();
  for (size_t i = 0; i < modes.size(); ++i) {
    model::LtQualityPoint p;
    p.label = modes[i].label;
    p.score = i == 0 ? "" : std::string(model::to_string(modes[i].settings.score));
    p.lazy_fraction = modes[i].settings.lazy_fraction;
    for (const auto& acc : passkey.value()["modes"][i]["accuracy"]) {
      p.passkey_lengths.push_back(acc["length"].get<int32_t>());
      p.passkey_accuracy.push_back(acc["accuracy"].get<double>());
    }
    p.ppl = ppl.value()["modes"][i]["points"].back()["ppl"].get<double>();
    plan.quality.push_back(std::move(p));
  }
  const model::LtQualityPoint& ref = plan.quality.front();
  for (model::LtQualityPoint& p : plan.quality) {
    bool ok = p.ppl <= ref.ppl * (1.0 + options.bound_ppl_percent / 100.0);
    for (size_t l = 0; l < p.passkey_accuracy.size(); ++l)
      ok = ok && p.passkey_accuracy[l] >= ref.passkey_accuracy[l] - options.bound_passkey_points;
    p.within_bound = ok;
  }

  // Per score, the largest fraction with it and every smaller one within the bound.
  double best_fraction = 0.0, best_ppl = ref.ppl;
  model::LazyScore best_score = options.scores.front();
  bool found = false;
  for (model::LazyScore score : options.scores) {
    double validated = -1.0, ppl_there = 0.0;
    for (double f : fractions) {
      const model::LtQualityPoint* point = nullptr;
      for (const model::LtQualityPoint& p : plan.quality) {
        if (p.score == model::to_string(score) && p.lazy_fraction == f) point = &p;
      }
      if (point == nullptr || !point->within_bound) break;
      validated = f;
      ppl_there = point->ppl;
    }
    if (validated < 0.0) continue;
    if (!found || validated > best_fraction ||
        (validated == best_fraction && ppl_there < best_ppl)) {
      found = true;
      best_fraction = validated;
      best_ppl = ppl_there;
      best_score = score;
    }
  }
  plan.score = best_score;
  plan.validated_fraction = found ? best_fraction : 0.0;
  plan.lazy_fraction = plan.validated_fraction;
  plan.bound_passkey_points = options.bound_passkey_points;
  plan.bound_ppl_percent = options.bound_ppl_percent;
  plan.passkey_trials = options.passkey.trials;
  plan.sink = options.base.sink;
  plan.window = options.base.window;
  plan.ppl_prefix = options.perplexity.prefix;
  plan.ppl_length = options.perplexity.lengths.front();
  return Status::Ok();
}

}  // namespace lightserve::eval
