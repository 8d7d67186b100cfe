// One sequence, start to end: prefill the prompt, then sample token by token until a stop. The
// single-request loop used by the CLI, eval and calibrate (the engine's continuous batching
// replaces it for serving).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/llama_model.h"
#include "model/sequence_kv.h"
#include "sampling/sampler.h"

namespace lightserve::model {

struct GenerateParams {
  int32_t max_tokens = 256;
  bool ignore_eos = false;
  // Prompt tokens per forward pass; 0 = the whole prompt at once (required by LightTransfer
  // sequences, whose prefill decides layer by layer over the whole prompt).
  int32_t prefill_chunk = 0;
  sampling::SamplingParams sampling;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, without the stop token
  bool stopped = false;         // ended on an end-of-generation token (else: max_tokens)
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// `on_token(id)` is called for each generated token (not the stop token); returning false ends
// generation early. Errors from the forward pass are returned as is.
Result<GenerateResult> generate(LlamaModel& model, SequenceKv& kv, std::span<const int32_t> prompt,
                                const GenerateParams& params,
                                const std::function<bool(int32_t)>& on_token = {});

}  // namespace lightserve::model
