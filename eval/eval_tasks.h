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

}  // namespace lightserve::eval
