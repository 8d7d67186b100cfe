// Token sampling from logits: greedy, or temperature with top-k, top-p and min-p filters, in
// llama.cpp's order (top-k → top-p → min-p → temperature → draw). The same seed and the same
// logits give the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "model/status.h"

namespace lightserve::model {

struct SamplingParams {
  float temperature = 0.8f;  // ≤ 0: greedy (argmax)
  int32_t top_k = 40;        // ≤ 0: off
  float top_p = 0.95f;       // ≥ 1: off
  float min_p = 0.05f;       // ≤ 0: off
  uint64_t seed = 0;

  // An Error naming the field for out-of-range values (negative temperature, top_p ∉ (0, 1],
  // min_p ∉ [0, 1], non-finite values).
  Status validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits);

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;
  std::vector<float> probs_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace lightserve::model
