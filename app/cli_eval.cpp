// `lightserve eval`: passkey retrieval and decode perplexity under LightTransfer modes
// (full, test, static, streaming, random), in the same engine and code path.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "app/subcommands.h"
#include "base/units.h"
#include "eval/eval_tasks.h"
#include "kernels/backend.h"
#include "serving/model_loading.h"

namespace lightserve::cli {

using namespace eval;  // the tasks this subcommand runs

namespace {

struct EvalCli {
  std::string model = serving::default_model_path();
  std::string task;
  std::string lengths;
  std::string modes = "full,test,streaming,random";
  std::string fractions = "0.5";
  std::string scores = "mean";
  std::string json_out;
  int32_t sink = 4;
  int32_t window = 1020;
  int32_t w_last = 16;
  uint64_t lt_seed = 0;
  std::string plan;
  int threads = 0;
  std::string device = serving::default_device();
  EvalOptions eval;
};

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t b = item.find_first_not_of(" \t");
    const size_t e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

// Parses the whole string as a number of type T, or returns false.
template <typename T>
bool parse_number(const std::string& text, T& value) {
  std::istringstream in(text);
  in >> value;
  return !in.fail() && in.peek() == std::char_traits<char>::eof();
}

int fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 2;
}

// The columns --modes × --lazy-fractions (× --scores for online mode) names (full and streaming
// once each). An online column is labelled by its score ("head-min f=0.50"; "test f=0.50" when
// --scores is only mean, the label of earlier runs).
Result<std::vector<EvalMode>> expand_modes(const EvalCli& o, const std::vector<double>& fractions) {
  std::vector<EvalMode> out;
  model::LightTransferSettings base;
  base.sink = o.sink;
  base.window = o.window;
  base.w_last = o.w_last;
  base.seed = o.lt_seed;
  std::vector<model::LazyScore> scores;
  for (const std::string& item : split_list(o.scores)) {
    auto score = model::parse_lazy_score(item);
    if (!score) return Error{"--scores: " + score.error().message};
    scores.push_back(score.value());
  }
  if (scores.empty()) return Error{"--scores names no score"};
  const bool mean_only = scores.size() == 1 && scores[0] == model::LazyScore::kMean;
  for (const std::string& name : split_list(o.modes)) {
    auto mode = model::parse_lt_mode(name);
    if (!mode) return Error{"--modes: " + mode.error().message};
    model::LightTransferSettings s = base;
    s.mode = mode.value();
    if (s.mode == model::LtMode::kFull || s.mode == model::LtMode::kStreaming) {
      s.lazy_fraction = s.mode == model::LtMode::kFull ? 0.0 : 1.0;
      out.push_back({name, s});
      continue;
    }
    for (double f : fractions) {
      s.lazy_fraction = f;
      char label[64];
      if (s.mode != model::LtMode::kOnline || mean_only) {
        std::snprintf(label, sizeof label, "%s f=%.2f", name.c_str(), f);
        out.push_back({label, s});
        continue;
      }
      for (model::LazyScore score : scores) {
        s.score = score;
        std::snprintf(label, sizeof label, "%s f=%.2f",
                      std::string(model::to_string(score)).c_str(), f);
        out.push_back({label, s});
      }
    }
  }
  if (out.empty()) return Error{"--modes names no mode"};
  return out;
}

int run_eval(EvalCli& o) {
  EvalOptions& e = o.eval;
  if (e.task != "passkey" && e.task != "perplexity") {
    return fail("unknown --task '" + e.task + "' (expected passkey or perplexity)");
  }
  if (o.lengths.empty()) o.lengths = e.task == "passkey" ? "2048,4096,8192" : "4096,8192";
  for (const std::string& item : split_list(o.lengths)) {
    int32_t n = 0;
    if (!parse_number(item, n) || n < 16)
      return fail("--lengths: '" + item + "' is not a length ≥ 16");
    e.lengths.push_back(n);
  }
  if (e.lengths.empty()) return fail("--lengths names no length");
  std::vector<double> fractions;
  for (const std::string& item : split_list(o.fractions)) {
    double f = 0;
    if (!parse_number(item, f) || !(f >= 0.0 && f <= 1.0)) {
      return fail("--lazy-fractions: '" + item + "' is not a fraction in [0, 1]");
    }
    fractions.push_back(f);
  }
  if (fractions.empty()) return fail("--lazy-fractions names no fraction");
  if (e.trials < 1) return fail("--trials must be ≥ 1");
  if (e.answer_tokens < 1) return fail("--answer-tokens must be ≥ 1");
  if (e.prefix < 1) return fail("--prefix must be ≥ 1");
  if (e.texts.empty()) e.texts.push_back("/usr/share/common-licenses/GPL-3");
  for (const std::string& path : e.texts) {
    if (e.task == "perplexity" && !std::ifstream(path)) return fail("--text: cannot read " + path);
  }
  auto modes = expand_modes(o, fractions);
  if (!modes) return fail(modes.error().message);
  if (!o.plan.empty()) {
    auto plan = model::LtPlan::load(o.plan);
    if (!plan) return fail(plan.error().message);
    for (EvalMode& m : modes.value()) m.settings.plan = plan.value();
  }

  auto loaded = serving::load_backend_and_model_or_report(o.device, o.threads, o.model, e.quiet);
  if (!loaded) return 1;
  std::unique_ptr<kernels::Backend>& backend = loaded->backend;
  std::unique_ptr<model::LlamaModel>& model = loaded->model;
  const auto& config = model->config();
  for (const EvalMode& m : modes.value()) {
    if (Status s = m.settings.validate(config.num_layers); !s)
      return fail(m.label + ": " + s.message());
  }
  for (int32_t n : e.lengths) {
    if (n > config.context_length) {
      return fail("length " + std::to_string(n) + " exceeds the model's context of " +
                  std::to_string(config.context_length));
    }
  }

  const auto start = std::chrono::steady_clock::now();
  auto result = e.task == "passkey" ? run_passkey(*model, e, modes.value())
                                    : run_perplexity(*model, e, modes.value());
  if (!result) {
    std::fprintf(stderr, "error: %s\n", result.error().message.c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!e.quiet) std::fprintf(stderr, "eval %s: %.1f s\n", e.task.c_str(), seconds);
  if (!o.json_out.empty()) {
    nlohmann::json doc = std::move(result).value();
    doc["task"] = e.task;
    doc["model"] = config.name;
    doc["model_path"] = o.model;
    doc["settings"] = {{"sink", o.sink},     {"window", o.window},   {"w_last", o.w_last},
                       {"scores", o.scores}, {"lt_seed", o.lt_seed}, {"plan", o.plan}};
    doc["seconds"] = seconds;
    doc["backend"] = backend->description();
    std::ofstream out(o.json_out);
    out << doc.dump(2) << "\n";
    if (!out) return fail("--json: cannot write " + o.json_out);
  }
  return 0;
}

}  // namespace

void register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalCli>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Quality under LightTransfer modes: passkey retrieval or decode perplexity");
  cmd->add_option("--model,-m", o->model, "GGUF model file or Hugging Face folder")
      ->capture_default_str();
  cmd->add_option("--task", o->eval.task, "passkey or perplexity")->required();
  cmd->add_option("--lengths", o->lengths,
                  "Comma-separated total lengths in tokens (default: passkey 2048,4096,8192; "
                  "perplexity 4096,8192)");
  cmd->add_option("--modes", o->modes, "Comma-separated modes: full,test,static,streaming,random")
      ->capture_default_str();
  cmd->add_option("--lazy-fractions", o->fractions,
                  "Comma-separated lazy fractions for test, static and random")
      ->capture_default_str();
  cmd->add_option("--scores", o->scores,
                  "Comma-separated laziness scores for online mode: mean, head-min, head-min-last")
      ->capture_default_str();
  cmd->add_option("--trials", o->eval.trials, "Passkey trials per length")->capture_default_str();
  cmd->add_option("--seed", o->eval.seed, "Seed of the passkey keys")->capture_default_str();
  cmd->add_flag("--chat", o->eval.chat, "Passkey: wrap the prompt in the model's chat template");
  cmd->add_option("--answer-tokens", o->eval.answer_tokens, "Passkey: greedy tokens generated")
      ->capture_default_str();
  cmd->add_option("--prefix", o->eval.prefix,
                  "Perplexity: tokens prefilled (exact in every mode) before token-by-token decode")
      ->capture_default_str();
  cmd->add_option(
      "--text", o->eval.texts,
      "Perplexity: text file(s), concatenated (default /usr/share/common-licenses/GPL-3)");
  cmd->add_option("--json", o->json_out, "Write every number to this JSON file");
  cmd->add_option("--sink", o->sink, "Initial tokens a lazy layer keeps (S)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--window", o->window, "Recent tokens a lazy layer keeps (W)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--w-last", o->w_last, "Last prompt tokens whose attention scores laziness")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--plan", o->plan, "Plan file (static mode; ties in online mode)")
      ->group("LightTransfer");
  cmd->add_option("--lt-seed", o->lt_seed, "Seed of the random mode's lazy set (passkey: + trial)")
      ->capture_default_str()
      ->group("LightTransfer");
  cmd->add_option("--threads", o->threads, "CPU threads; 0 = one per core")->capture_default_str();
  cmd->add_option("--device", o->device, serving::kDeviceHelp)->capture_default_str();
  cmd->add_flag("--quiet,-q", o->eval.quiet, "No progress on stderr");
  cmd->callback([o] { set_exit_code(run_eval(*o)); });
}

}  // namespace lightserve::cli
