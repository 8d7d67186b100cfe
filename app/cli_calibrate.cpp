// `lightserve calibrate`: the paper's offline layer selection. Runs each prompt's prefill in test
// mode (exact attention, lazy ratios measured, the top-P decision made), counts how often each
// layer ends lazy, and writes the ranking as a plan file for --lt-mode static (and for breaking
// ties in online mode). With --quality it first measures passkey and perplexity against full
// attention for every laziness score and fraction (eval/quality_gate.cpp) and writes the largest
// fraction within the bound, its score and the measurements into the plan: the serving default.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "app/lighttransfer_flags.h"
#include "app/subcommands.h"
#include "base/units.h"
#include "eval/eval_tasks.h"
#include "kernels/backend.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "serving/model_loading.h"

namespace lightserve::cli {
namespace {

struct CalibrateOptions {
  std::string model = serving::default_model_path();
  std::string prompts;
  std::string out;
  int max_prompts = 0;
  bool chat = false;
  int threads = 0;
  std::string device = serving::default_device();
  bool quiet = false;
  serving::LightTransferOptions lt;
  // --quality: the gate (eval/quality_gate.cpp)
  bool quality = false;
  std::string gate_fractions = "0.25,0.5,0.75";
  std::string gate_scores = "mean,head-min,head-min-last";
  std::string passkey_lengths = "4096";
  int32_t passkey_trials = 10;
  uint64_t passkey_seed = 1234;
  std::vector<std::string> ppl_texts{"/usr/share/common-licenses/GPL-3"};
  int32_t ppl_length = 4096;
  int32_t ppl_prefix = 3072;
  double bound_passkey = 2.0;
  double bound_ppl = 2.0;
};

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const size_t b = item.find_first_not_of(" \t");
    const size_t e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

// The gate's options from the flags, or an Error naming the bad one.
Result<eval::QualityGateOptions> gate_options(const CalibrateOptions& o,
                                              const model::LightTransferSettings& base) {
  eval::QualityGateOptions q;
  q.base = base;
  q.base.plan.reset();
  for (const std::string& item : split_list(o.gate_fractions)) {
    char* end = nullptr;
    const double f = std::strtod(item.c_str(), &end);
    if (end == item.c_str() || *end != '\0' || !(f > 0.0 && f <= 1.0))
      return Error{"--gate-fractions: '" + item + "' is not a fraction in (0, 1]"};
    q.fractions.push_back(f);
  }
  // An explicit --lt-score gates that score only.
  for (const std::string& item :
       o.lt.score.empty() ? split_list(o.gate_scores) : std::vector<std::string>{o.lt.score}) {
    auto score = model::parse_lazy_score(item);
    if (!score) return Error{"--gate-scores: " + score.error().message};
    q.scores.push_back(score.value());
  }
  for (const std::string& item : split_list(o.passkey_lengths)) {
    char* end = nullptr;
    const long n = std::strtol(item.c_str(), &end, 10);
    if (end == item.c_str() || *end != '\0' || n < 64)
      return Error{"--passkey-lengths: '" + item + "' is not a length ≥ 64"};
    q.passkey.lengths.push_back(static_cast<int32_t>(n));
  }
  if (q.fractions.empty() || q.scores.empty() || q.passkey.lengths.empty())
    return Error{"--gate-fractions, --gate-scores and --passkey-lengths must each name one item"};
  if (o.passkey_trials < 1) return Error{"--passkey-trials must be ≥ 1"};
  if (o.ppl_prefix < 1 || o.ppl_length <= o.ppl_prefix)
    return Error{"--ppl-prefix must be ≥ 1 and below --ppl-length"};
  if (!(o.bound_passkey >= 0.0) || !(o.bound_ppl >= 0.0))
    return Error{"--bound-passkey and --bound-ppl must be ≥ 0"};
  for (const std::string& path : o.ppl_texts) {
    if (!std::ifstream(path)) return Error{"--ppl-text: cannot read " + path};
  }
  q.passkey.task = "passkey";
  q.passkey.trials = o.passkey_trials;
  q.passkey.seed = o.passkey_seed;
  q.passkey.quiet = o.quiet;
  q.perplexity.task = "perplexity";
  q.perplexity.lengths = {o.ppl_length};
  q.perplexity.prefix = o.ppl_prefix;
  q.perplexity.texts = o.ppl_texts;
  q.perplexity.quiet = o.quiet;
  q.bound_passkey_points = o.bound_passkey;
  q.bound_ppl_percent = o.bound_ppl;
  return q;
}

// Plain-text prompts: one per line, with \n, \t and \\ escapes.
std::string unescape(const std::string& line) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size()) {
      const char c = line[i + 1];
      if (c == 'n' || c == 't' || c == '\\') {
        out += c == 'n' ? '\n' : c == 't' ? '\t' : '\\';
        ++i;
        continue;
      }
    }
    out += line[i];
  }
  return out;
}

// JSONL (a "prompt" string per line) when the first non-blank character is '{', else plain text.
Result<std::vector<std::string>> read_prompts(const std::string& path, int max_prompts) {
  std::ifstream in(path);
  if (!in) return Error{"--prompts: cannot read " + path};
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  bool jsonl = false;
  for (const std::string& line : lines) {
    const size_t p = line.find_first_not_of(" \t");
    if (p == std::string::npos) continue;
    jsonl = line[p] == '{';
    break;
  }
  std::vector<std::string> prompts;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (max_prompts > 0 && static_cast<int>(prompts.size()) >= max_prompts) break;
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    if (!jsonl) {
      prompts.push_back(unescape(lines[i]));
      continue;
    }
    const std::string where = path + ":" + std::to_string(i + 1);
    nlohmann::json doc = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return Error{where + ": not valid JSON"};
    if (!doc.is_object() || !doc.contains("prompt") || !doc["prompt"].is_string()) {
      return Error{where + ": expected an object with a string \"prompt\""};
    }
    prompts.push_back(doc["prompt"].get<std::string>());
  }
  if (prompts.empty()) return Error{"--prompts: " + path + " holds no prompt"};
  return prompts;
}

int fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 2;
}

int run_calibrate(CalibrateOptions& o) {
  // The ranking is measured afresh: no shipped plan's tie order or fraction unless asked for.
  if (o.lt.plan.empty()) o.lt.plan = "none";
  if (o.lt.lazy_fraction == serving::LightTransferOptions::kFromPlan) o.lt.lazy_fraction = 0.5;
  if (Result<model::LtMode> mode = model::parse_lt_mode(o.lt.mode);
      !mode || mode.value() != model::LtMode::kOnline) {
    return fail("calibrate measures in online mode; --lt-mode must be online");
  }
  if (o.max_prompts < 0) return fail("--max-prompts must be ≥ 0");
  if (!(o.lt.lazy_fraction >= 0.0 && o.lt.lazy_fraction <= 1.0)) {
    return fail("--lazy-fraction must be in [0, 1], got " + std::to_string(o.lt.lazy_fraction));
  }
  auto texts = read_prompts(o.prompts, o.max_prompts);
  if (!texts) return fail(texts.error().message);
  if (std::ofstream probe(o.out, std::ios::app); !probe)
    return fail("--out: cannot write " + o.out);

  auto loaded = serving::load_backend_and_model_or_report(o.device, o.threads, o.model, o.quiet);
  if (!loaded) return 1;
  std::unique_ptr<kernels::Backend>& backend = loaded->backend;
  std::unique_ptr<model::LlamaModel>& model = loaded->model;
  const auto& config = model->config();
  auto lt = o.lt.settings(config);
  if (!lt) return fail(lt.error().message);
  model::LightTransferSettings settings = lt.value();
  const model::Tokenizer& tok = model->tokenizer();
  const model::ChatTemplate* chat = model->chat_template();
  if (o.chat && chat == nullptr) return fail("--chat: " + model->chat_error());
  model::LtPlan gated;
  if (o.quality) {
    auto q = gate_options(o, settings);
    if (!q) return fail(q.error().message);
    for (int32_t n : q->passkey.lengths) {
      if (n > config.context_length)
        return fail("--passkey-lengths: " + std::to_string(n) + " exceeds the model's context");
      if (n <= settings.sink + settings.window) {
        std::fprintf(stderr,
                     "warning: passkey length %d is no longer than sink + window = %d: lazy "
                     "layers keep every token there, so it cannot fail the gate\n",
                     n, settings.sink + settings.window);
      }
    }
    const auto gate_start = std::chrono::steady_clock::now();
    if (Status s = eval::run_quality_gate(*model, q.value(), gated); !s) {
      std::fprintf(stderr, "error: %s\n", s.message().c_str());
      return 1;
    }
    std::printf(
        "quality gate: %.1f s\n",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - gate_start).count());
    // The ranking below is made with the validated score at the validated fraction.
    settings.score = gated.score;
    settings.lazy_fraction = gated.validated_fraction;
  }

  std::vector<std::vector<int32_t>> prompts;
  int32_t longest = 0, cut = 0, short_prompts = 0;
  for (const std::string& text : texts.value()) {
    std::string rendered = text;
    if (o.chat) {
      std::vector<model::ChatMessage> messages{{"user", text}};
      rendered = chat->render(messages, /*add_generation_prompt=*/true).value();  // one user turn
    }
    // A rendered chat carries its own BOS where the template has one.
    std::vector<int32_t> ids =
        tok.encode(rendered, !o.chat && tok.add_bos_token(), /*parse_special=*/o.chat);
    if (ids.empty()) continue;
    if (static_cast<int32_t>(ids.size()) > config.context_length) {
      ids.resize(config.context_length);
      ++cut;
    }
    if (static_cast<int32_t>(ids.size()) <= settings.sink + settings.window) ++short_prompts;
    longest = std::max(longest, static_cast<int32_t>(ids.size()));
    prompts.push_back(std::move(ids));
  }
  if (prompts.empty()) return fail("--prompts: every prompt is empty after tokenization");
  if (cut > 0) {
    std::fprintf(stderr, "note: %d prompt(s) cut to the model's context of %d tokens\n", cut,
                 config.context_length);
  }
  if (short_prompts > 0) {
    std::fprintf(stderr,
                 "warning: %d of %zu prompts are no longer than sink + window = %d tokens: every "
                 "lazy ratio is 1 for them, so they carry no information (ties fall to layer "
                 "order). Use longer prompts or a smaller --window.\n",
                 short_prompts, prompts.size(), settings.sink + settings.window);
  }

  auto arena = model::KvArena::create_for(*backend, config, settings, longest);
  if (!arena) return fail(arena.error().message);
  const int32_t layers = config.num_layers;
  std::vector<double> lazy_count(layers, 0), ratio_sum(layers, 0);
  std::vector<float> ratio_min(layers, 2.0f), ratio_max(layers, -1.0f);
  std::vector<float> logits;
  const auto start = std::chrono::steady_clock::now();
  int64_t total_tokens = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& ids = prompts[i];
    auto seq = model::HybridSequence::create(*arena.value(), config, settings,
                                             static_cast<int32_t>(ids.size()));
    if (!seq) return fail(seq.error().message);
    const model::BatchEntry entry{seq.value().get(), ids, false};
    if (Status s = model->forward({&entry, 1}, logits); !s) {
      std::fprintf(stderr, "error: prompt %zu: %s\n", i + 1, s.message().c_str());
      return 1;
    }
    const model::HybridSequence& hs = *seq.value();
    for (int32_t l = 0; l < layers; ++l) {
      const float r = hs.lazy_ratios()[l];
      ratio_sum[l] += r;
      ratio_min[l] = std::min(ratio_min[l], r);
      ratio_max[l] = std::max(ratio_max[l], r);
      if (hs.layer_map().is_lazy(l)) lazy_count[l] += 1;
    }
    total_tokens += static_cast<int64_t>(ids.size());
    if (!o.quiet) {
      std::fprintf(stderr, "  prompt %zu/%zu: %zu tokens, %d lazy layers\n", i + 1, prompts.size(),
                   ids.size(), hs.layer_map().num_lazy_layers());
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  model::LtPlan plan;
  plan.model = config.name;
  plan.num_layers = layers;
  plan.lazy_fraction = settings.lazy_fraction;
  plan.num_prompts = static_cast<int32_t>(prompts.size());
  const double n = static_cast<double>(prompts.size());
  for (int32_t l = 0; l < layers; ++l) {
    plan.lazy_frequency.push_back(lazy_count[l] / n);
    plan.mean_ratio.push_back(ratio_sum[l] / n);
  }
  plan.ranking.resize(layers);
  std::iota(plan.ranking.begin(), plan.ranking.end(), 0);
  // Laziest first: frequency, then mean ratio, then the higher layer (the selector's tie order).
  std::stable_sort(plan.ranking.begin(), plan.ranking.end(), [&](int32_t a, int32_t b) {
    if (plan.lazy_frequency[a] != plan.lazy_frequency[b]) {
      return plan.lazy_frequency[a] > plan.lazy_frequency[b];
    }
    if (plan.mean_ratio[a] != plan.mean_ratio[b]) return plan.mean_ratio[a] > plan.mean_ratio[b];
    return a > b;
  });
  plan.score = settings.score;
  if (o.quality) {
    plan.validated_fraction = gated.validated_fraction;
    plan.bound_passkey_points = gated.bound_passkey_points;
    plan.bound_ppl_percent = gated.bound_ppl_percent;
    plan.passkey_trials = gated.passkey_trials;
    plan.sink = gated.sink;
    plan.window = gated.window;
    plan.ppl_prefix = gated.ppl_prefix;
    plan.ppl_length = gated.ppl_length;
    plan.quality = gated.quality;
  }
  if (Status s = plan.save(o.out); !s) return fail(s.message());

  std::vector<int32_t> rank_of(layers);
  for (int32_t i = 0; i < layers; ++i) rank_of[plan.ranking[i]] = i + 1;
  const int32_t num_lazy = static_cast<int32_t>(std::lround(settings.lazy_fraction * layers));
  std::printf(
      "calibrated %s on %zu prompts (%lld tokens, longest %d) in %.1f s; lazy fraction "
      "%.2f, sink %d, window %d, w_last %d\n",
      config.name.empty() ? "model" : config.name.c_str(), prompts.size(),
      static_cast<long long>(total_tokens), longest, seconds, settings.lazy_fraction, settings.sink,
      settings.window, settings.w_last);
  std::printf("%5s %10s %10s %8s %8s %5s %6s\n", "layer", "lazy_freq", "mean_ratio", "min", "max",
              "rank", "plan");
  for (int32_t l = 0; l < layers; ++l) {
    std::printf("%5d %10.3f %10.4f %8.4f %8.4f %5d %6s\n", l, plan.lazy_frequency[l],
                plan.mean_ratio[l], ratio_min[l], ratio_max[l], rank_of[l],
                rank_of[l] <= num_lazy ? "lazy" : "full");
  }
  if (o.quality) {
    std::printf("%-22s %-28s %10s %s\n", "configuration", "passkey %", "ppl", "within bound");
    for (const model::LtQualityPoint& p : plan.quality) {
      std::string acc;
      for (double a : p.passkey_accuracy)
        acc += (acc.empty() ? "" : " ") + std::to_string(a).substr(0, 5);
      std::printf("%-22s %-28s %10.3f %s\n", p.label.c_str(), acc.c_str(), p.ppl,
                  p.score.empty()  ? "(reference)"
                  : p.within_bound ? "yes"
                                   : "no");
    }
    std::printf(
        "validated: score %s, lazy fraction %.2f (the largest within passkey -%.1f points and "
        "perplexity +%.1f%% of full attention)\n",
        std::string(model::to_string(plan.score)).c_str(), plan.validated_fraction,
        plan.bound_passkey_points, plan.bound_ppl_percent);
  }
  std::printf("wrote %s (ranking laziest first; static mode makes the first %d lazy)\n",
              o.out.c_str(), num_lazy);
  return 0;
}

}  // namespace

void register_calibrate(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate", "Rank layers by laziness over a prompt set and write a LightTransfer plan file");
  cmd->add_option("--model,-m", o->model, "GGUF model file or Hugging Face folder")
      ->capture_default_str();
  cmd->add_option("--prompts", o->prompts,
                  "Prompt file: JSONL with a \"prompt\" string per line, or plain text with one "
                  "prompt per line (\\n escapes)")
      ->required();
  cmd->add_option("--out,-o", o->out, "Plan file to write (YAML)")->required();
  cmd->add_option("--max-prompts", o->max_prompts, "Use at most N prompts; 0 = all")
      ->capture_default_str();
  cmd->add_flag("--chat", o->chat,
                "Wrap each prompt as a user message in the model's chat template");
  cmd->add_option("--threads", o->threads, "CPU threads; 0 = one per core")->capture_default_str();
  cmd->add_option("--device", o->device, serving::kDeviceHelp)->capture_default_str();
  cmd->add_flag("--quiet,-q", o->quiet, "No progress on stderr");
  add_lighttransfer_flags(cmd, o->lt);
  cmd->add_flag("--quality", o->quality,
                "Also measure passkey and perplexity against full attention for every score and "
                "fraction, and write the largest fraction within the bound into the plan")
      ->group("Quality gate");
  cmd->add_option("--gate-fractions", o->gate_fractions, "Lazy fractions tried")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--gate-scores", o->gate_scores,
                  "Laziness scores tried (an explicit --lt-score tries only that one)")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--passkey-lengths", o->passkey_lengths, "Passkey prompt lengths (tokens)")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--passkey-trials", o->passkey_trials, "Passkey trials per length")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--passkey-seed", o->passkey_seed, "Seed of the passkey keys")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--ppl-text", o->ppl_texts, "Perplexity text file(s), concatenated")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--ppl-length", o->ppl_length, "Perplexity: tokens of text scored up to")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--ppl-prefix", o->ppl_prefix, "Perplexity: tokens prefilled before decoding")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--bound-passkey", o->bound_passkey,
                  "Passkey accuracy allowed below full attention, in points at every length")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->add_option("--bound-ppl", o->bound_ppl,
                  "Perplexity allowed above full attention, in percent")
      ->capture_default_str()
      ->group("Quality gate");
  cmd->callback([o] { set_exit_code(run_calibrate(*o)); });
}

}  // namespace lightserve::cli
