// Token sampling from logits: penalties first (repetition over prompt and output as llama.cpp
// and Hugging Face; presence and frequency over the output as the OpenAI API), then greedy, or
// temperature with top-k, top-p and min-p filters in llama.cpp's order (top-k → top-p → min-p →
// temperature → draw). The same seed and the same logits give the same tokens.
//
// A request that reads no more of a row than its best few tokens (greedy, or temperature with
// top-k, and nothing that adjusts logits: Sampler::candidates_needed) may be sampled from those
// candidates alone (Sampler::sample over Candidate): the engine then asks its executor for them
// instead of the whole row (on a GPU: Backend::topk_rows, k pairs downloaded instead of the vocab),
// and the draw is the one the whole row would give, bit for bit and with the same RNG state.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "base/rank_order.h"
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

// One token of a logits row: its id and its logit (`value`). The order the sampler ranks a row's
// tokens in (top-k keeps a prefix of it) is base/rank_order.h's ranks_before, the order
// kernels::Backend::topk_rows returns a row's best k in.
using Candidate = Ranked;
using lightserve::ranks_before;

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // `prompt` and `output`: the tokens so far (read only when a penalty is set). With a
  // constraint, the drawn token is also accepted by the request's matcher.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> prompt = {},
                 std::span<const int32_t> output = {});

  // How many of the next row's best candidates (ranks_before order) the next draw reads, when
  // that is all it reads: 1 for greedy, min(top_k, vocab_size) for temperature with top-k (top-p,
  // min-p and the temperature then act within those); 0 when it needs the whole row, or more
  // than max_candidates of it: top-k off, penalties, logit_bias, min_tokens still blocking (the
  // output holds num_output tokens), a constraint.
  int32_t candidates_needed(int64_t num_output, int32_t vocab_size, int32_t max_candidates) const;
  // The draw from the row's first candidates_needed() candidates, in ranks_before order (more may
  // follow; they are ignored): the token, and the RNG state after it, that sample() over the whole
  // row gives. Only when candidates_needed() > 0 (no constraint: nothing to accept).
  int32_t sample(std::span<const Candidate> best);

 private:
  int32_t draw(std::span<const float> logits, std::span<const int32_t> prompt,
               std::span<const int32_t> output);
  // top-p, min-p, temperature and the draw over candidates_[0, n) (top-k already applied,
  // ranks_before order): the one draw both entry points share.
  int32_t draw_ranked(size_t n);
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;
  std::vector<float> probs_;
  std::vector<float> penalized_;
  std::optional<ConstraintMatcher> matcher_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace lightserve::sampling
