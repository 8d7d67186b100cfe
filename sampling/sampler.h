// Token sampling from logits: penalties first (repetition over prompt and output as llama.cpp
// and Hugging Face; presence and frequency over the output as the OpenAI API), then greedy, or
// temperature with top-k, top-p and min-p filters in llama.cpp's order (top-k → top-p → min-p →
// temperature → draw). The same seed and the same logits give the same tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "base/status.h"
#include "sampling/constraint.h"

namespace lightserve::sampling {

struct SamplingParams {
  float temperature = 0.8f;  // ≤ 0: greedy (argmax)
  int32_t top_k = 40;        // ≤ 0: off
  float top_p = 0.95f;       // ≥ 1: off
  float min_p = 0.05f;       // ≤ 0: off
  uint64_t seed = 0;
  float repetition_penalty = 1.0f;  // 1: off; a seen token's logit l becomes l/p (l > 0) or l·p
  float presence_penalty = 0.0f;    // subtracted once from every token the output holds
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the output
  // OpenAI logit_bias: added to these tokens' logits before anything else; each in [-100, 100]
  // (-100 bans a token in practice, 100 all but forces it). Ids outside the logits are ignored.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // While the output holds fewer than min_tokens tokens, the ids in min_tokens_blocked (the
  // request's stop ids: EOS unless ignored, stop_token_ids; the engine fills them) are not drawn.
  int32_t min_tokens = 0;
  std::vector<int32_t> min_tokens_blocked;
  // Constrained decoding (sampling/constraint.h): tokens the constraint does not allow next are
  // never drawn, after every other adjustment. Null: unconstrained.
  std::shared_ptr<const CompiledConstraint> constraint;

  bool has_penalties() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
  // An Error naming the field for out-of-range values (negative temperature, top_p ∉ (0, 1],
  // min_p ∉ [0, 1], repetition_penalty ∉ (0, 10], presence / frequency ∉ [−2, 2], a logit bias
  // ∉ [−100, 100], min_tokens < 0, non-finite).
  Status validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // `prompt` and `output`: the tokens so far (read only when a penalty is set). With a
  // constraint, the drawn token is also accepted by the request's matcher.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> prompt = {},
                 std::span<const int32_t> output = {});

 private:
  int32_t draw(std::span<const float> logits, std::span<const int32_t> prompt,
               std::span<const int32_t> output);
  struct Candidate {
    int32_t id;
    float logit;
  };
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;
  std::vector<float> probs_;
  std::vector<float> penalized_;
  std::optional<ConstraintMatcher> matcher_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace lightserve::sampling
