#include "model/lighttransfer.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

namespace lightserve::model {

std::string_view to_string(LtMode mode) {
  switch (mode) {
    case LtMode::kOnline:
      return "online";
    case LtMode::kStatic:
      return "static";
    case LtMode::kFull:
      return "full";
    case LtMode::kStreaming:
      return "streaming";
    case LtMode::kRandom:
      return "random";
  }
  return "?";
}

Result<LtMode> parse_lt_mode(std::string_view text) {
  for (LtMode m :
       {LtMode::kOnline, LtMode::kStatic, LtMode::kFull, LtMode::kStreaming, LtMode::kRandom}) {
    if (text == to_string(m)) return m;
  }
  if (text == "test") return LtMode::kOnline;  // the older name (the paper's "test-time")
  return Error{"unknown LightTransfer mode '" + std::string(text) +
               "' (expected online, static, full, streaming or random)"};
}

std::string_view to_string(LazyScore score) {
  switch (score) {
    case LazyScore::kMean:
      return "mean";
    case LazyScore::kHeadMin:
      return "head-min";
    case LazyScore::kHeadMinLast:
      return "head-min-last";
  }
  return "?";
}

Result<LazyScore> parse_lazy_score(std::string_view text) {
  for (LazyScore s : {LazyScore::kMean, LazyScore::kHeadMin, LazyScore::kHeadMinLast}) {
    if (text == to_string(s)) return s;
  }
  return Error{"unknown laziness score '" + std::string(text) +
               "' (expected mean, head-min or head-min-last)"};
}

std::vector<int32_t> LtPlan::lazy_layers(int32_t count) const {
  std::vector<int32_t> out(ranking.begin(),
                           ranking.begin() + std::min<size_t>(count, ranking.size()));
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int32_t> LtPlan::tie_rank() const {
  std::vector<int32_t> rank(num_layers, 0);
  for (size_t i = 0; i < ranking.size(); ++i)
    rank[ranking[i]] = num_layers - static_cast<int32_t>(i);
  return rank;
}

Result<LtPlan> LtPlan::load(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    return Error{path + ": cannot read the plan: " + e.what()};
  }
  LtPlan plan;
  try {
    plan.model = root["model"] ? root["model"].as<std::string>() : "";
    plan.num_layers = root["num_layers"].as<int32_t>();
    plan.lazy_fraction = root["lazy_fraction"].as<double>();
    plan.num_prompts = root["num_prompts"] ? root["num_prompts"].as<int32_t>() : 0;
    plan.ranking = root["ranking"].as<std::vector<int32_t>>();
    if (root["lazy_frequency"])
      plan.lazy_frequency = root["lazy_frequency"].as<std::vector<double>>();
    if (root["mean_ratio"]) plan.mean_ratio = root["mean_ratio"].as<std::vector<double>>();
    if (root["score"]) {
      auto score = parse_lazy_score(root["score"].as<std::string>());
      if (!score) return Error{path + ": " + score.error().message};
      plan.score = score.value();
    }
    if (const YAML::Node q = root["quality"]) {
      plan.validated_fraction = q["validated_fraction"].as<double>();
      plan.bound_passkey_points = q["bound"]["passkey_points"].as<double>();
      plan.bound_ppl_percent = q["bound"]["ppl_percent"].as<double>();
      plan.passkey_trials = q["passkey_trials"].as<int32_t>();
      plan.sink = q["sink"].as<int32_t>();
      plan.window = q["window"].as<int32_t>();
      plan.ppl_prefix = q["ppl_prefix"].as<int32_t>();
      plan.ppl_length = q["ppl_length"].as<int32_t>();
      for (const YAML::Node& m : q["measurements"]) {
        LtQualityPoint point;
        point.label = m["label"].as<std::string>();
        point.score = m["score"].as<std::string>();
        point.lazy_fraction = m["lazy_fraction"].as<double>();
        point.passkey_lengths = m["passkey_lengths"].as<std::vector<int32_t>>();
        point.passkey_accuracy = m["passkey_accuracy"].as<std::vector<double>>();
        point.ppl = m["ppl"].as<double>();
        point.within_bound = m["within_bound"].as<bool>();
        plan.quality.push_back(std::move(point));
      }
    }
  } catch (const std::exception& e) {
    return Error{path + ": malformed plan (needs num_layers, lazy_fraction, ranking): " + e.what()};
  }
  if (plan.validated_fraction > 1.0) {
    return Error{path + ": quality.validated_fraction " + std::to_string(plan.validated_fraction) +
                 " is not a fraction"};
  }
  if (plan.num_layers <= 0 || plan.num_layers > 1024) {
    return Error{path + ": num_layers " + std::to_string(plan.num_layers) + " is out of range"};
  }
  std::vector<int32_t> sorted = plan.ranking;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int32_t> expected(plan.num_layers);
  std::iota(expected.begin(), expected.end(), 0);
  if (sorted != expected) {
    return Error{path + ": ranking must list every layer 0.." +
                 std::to_string(plan.num_layers - 1) + " exactly once"};
  }
  return plan;
}

Status LtPlan::save(const std::string& path) const {
  YAML::Emitter out;
  out << YAML::Comment(
      "lightserve LightTransfer plan (lightserve calibrate): layers ranked by laziness");
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << model;
  out << YAML::Key << "num_layers" << YAML::Value << num_layers;
  out << YAML::Key << "lazy_fraction" << YAML::Value << lazy_fraction;
  out << YAML::Key << "num_prompts" << YAML::Value << num_prompts;
  out << YAML::Key << "ranking" << YAML::Value << YAML::Flow << ranking;
  out << YAML::Key << "lazy_layers" << YAML::Value << YAML::Flow
      << lazy_layers(static_cast<int32_t>(std::lround(lazy_fraction * num_layers)));
  out << YAML::Key << "lazy_frequency" << YAML::Value << YAML::Flow << lazy_frequency;
  out << YAML::Key << "mean_ratio" << YAML::Value << YAML::Flow << mean_ratio;
  out << YAML::Key << "score" << YAML::Value << std::string(to_string(score));
  if (validated_fraction >= 0.0) {
    out << YAML::Key << "quality" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "validated_fraction" << YAML::Value << validated_fraction;
    out << YAML::Key << "bound" << YAML::Value << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "passkey_points" << YAML::Value << bound_passkey_points;
    out << YAML::Key << "ppl_percent" << YAML::Value << bound_ppl_percent << YAML::EndMap;
    out << YAML::Key << "passkey_trials" << YAML::Value << passkey_trials;
    out << YAML::Key << "sink" << YAML::Value << sink;
    out << YAML::Key << "window" << YAML::Value << window;
    out << YAML::Key << "ppl_prefix" << YAML::Value << ppl_prefix;
    out << YAML::Key << "ppl_length" << YAML::Value << ppl_length;
    out << YAML::Key << "measurements" << YAML::Value << YAML::BeginSeq;
    for (const LtQualityPoint& p : quality) {
      out << YAML::Flow << YAML::BeginMap;
      out << YAML::Key << "label" << YAML::Value << p.label;
      out << YAML::Key << "score" << YAML::Value << p.score;
      out << YAML::Key << "lazy_fraction" << YAML::Value << p.lazy_fraction;
      out << YAML::Key << "passkey_lengths" << YAML::Value << p.passkey_lengths;
      out << YAML::Key << "passkey_accuracy" << YAML::Value << p.passkey_accuracy;
      out << YAML::Key << "ppl" << YAML::Value << p.ppl;
      out << YAML::Key << "within_bound" << YAML::Value << p.within_bound;
      out << YAML::EndMap;
    }
    out << YAML::EndSeq << YAML::EndMap;
  }
  out << YAML::EndMap;
  std::ofstream file(path);
  if (!file) return Error{path + ": cannot write the plan"};
  file << out.c_str() << "\n";
  return file ? Status::Ok() : Status(Error{path + ": write failed"});
}

int32_t LightTransferSettings::num_full_layers(int32_t num_layers) const {
  switch (mode) {
    case LtMode::kFull:
      return num_layers;
    case LtMode::kStreaming:
      return 0;
    default:
      return num_layers - static_cast<int32_t>(std::lround(lazy_fraction * num_layers));
  }
}

Status LightTransferSettings::validate(int32_t num_layers) const {
  if (!(lazy_fraction >= 0.0 && lazy_fraction <= 1.0)) {
    return Error{"lazy_fraction must be in [0, 1], got " + std::to_string(lazy_fraction)};
  }
  if (sink < 0) return Error{"sink must be ≥ 0, got " + std::to_string(sink)};
  if (window < 1) return Error{"window must be ≥ 1, got " + std::to_string(window)};
  if (w_last < 1) return Error{"w_last must be ≥ 1, got " + std::to_string(w_last)};
  if (mode == LtMode::kStatic && !plan) return Error{"mode static needs a plan file (--plan)"};
  if (plan && plan->num_layers != num_layers) {
    return Error{"the plan is for " + std::to_string(plan->num_layers) + " layers; the model has " +
                 std::to_string(num_layers)};
  }
  return Status::Ok();
}

bool LazySelector::Entry::operator<(const Entry& other) const {
  if (ratio != other.ratio) return ratio < other.ratio;
  return tie < other.tie;
}

LazySelector::LazySelector(int32_t num_full_layers, std::vector<int32_t> tie_rank)
    : num_full_layers_(num_full_layers), tie_rank_(std::move(tie_rank)) {}

LazySelector::Decision LazySelector::push(int32_t layer, float ratio) {
  ratios_.push_back(ratio);
  const int32_t tie = tie_rank_.empty() ? layer : tie_rank_[layer];
  heap_.push_back({ratio, tie, layer});
  std::push_heap(heap_.begin(), heap_.end());
  Decision decision{true, -1};
  if (static_cast<int32_t>(heap_.size()) > num_full_layers_) {
    std::pop_heap(heap_.begin(), heap_.end());
    const int32_t laziest = heap_.back().layer;
    heap_.pop_back();
    if (laziest == layer) {
      decision.arrival_full = false;
    } else {
      decision.demoted = laziest;
    }
  }
  return decision;
}

}  // namespace lightserve::model
