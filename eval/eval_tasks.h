// `lightserve eval`: the quality tasks (passkey retrieval, decode perplexity) run under several
// LightTransfer modes in the same engine, one HybridSequence per trial.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "model/lighttransfer.h"
#include "model/llama_model.h"

namespace lightserve::eval {

// One column of the results: a mode with its settings ("test f=0.50").
struct EvalMode {
  std::string label;
  model::LightTransferSettings settings;
};

struct EvalOptions {
  std::string task;                // passkey | perplexity
  std::vector<int32_t> lengths;    // total tokens (prompt for passkey, text for perplexity)
  int32_t trials = 20;             // passkey trials per length
  uint64_t seed = 1234;            // passkey keys and depths
  bool chat = false;               // passkey: wrap in the model's chat template
  int32_t answer_tokens = 8;       // passkey: greedy tokens generated
  int32_t prefix = 1024;           // perplexity: tokens prefilled before decoding
  std::vector<std::string> texts;  // perplexity: files concatenated
  bool quiet = false;
};

// A HybridSequence of `capacity` tokens in a fresh arena sized for it under `settings`.
struct EvalSequence {
  std::unique_ptr<model::KvArena> arena;
  std::unique_ptr<model::HybridSequence> seq;
};
Result<EvalSequence> make_eval_sequence(const model::LlamaModel& model,
                                        const model::LightTransferSettings& settings,
                                        int32_t capacity);

// Layers lazy in a sequence after prefill, as a compact string ("3,7,12").
std::string lazy_layer_list(const model::HybridSequence& seq);

// Each returns the JSON of all its numbers (and prints its table), or an Error.
Result<nlohmann::json> run_passkey(model::LlamaModel& model, const EvalOptions& options,
                                   const std::vector<EvalMode>& modes);
Result<nlohmann::json> run_perplexity(model::LlamaModel& model, const EvalOptions& options,
                                      const std::vector<EvalMode>& modes);

// `lightserve calibrate --quality`: passkey and decode perplexity of full attention and of online
// mode at every score × fraction, on the same prompts, and the largest fraction within the bound.
struct QualityGateOptions {
  std::vector<double> fractions;         // lazy fractions tried
  std::vector<model::LazyScore> scores;  // laziness scores tried
  model::LightTransferSettings base;     // sink, window, w_last (and a plan for ties)
  EvalOptions passkey;                   // lengths, trials, seed
  EvalOptions perplexity;                // one length, prefix, texts
  double bound_passkey_points = 2.0;     // passkey at most this many points below full
  double bound_ppl_percent = 2.0;        // perplexity at most this many % above full
};

// Measures and fills plan.quality, validated_fraction, score, the bound and the setup: per score
// the largest fraction whose passkey accuracy (every length) and perplexity stay within the bound
// of full attention; of the scores, the one with the largest such fraction (ties: the lower
// perplexity there). validated_fraction is 0 when no fraction passes.
Status run_quality_gate(model::LlamaModel& model, const QualityGateOptions& options,
                        model::LtPlan& plan);

}  // namespace lightserve::eval
