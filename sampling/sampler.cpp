#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "base/check.h"

namespace lightserve::sampling {

Status SamplingParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f || temperature > 100.0f) {
    return Error{"temperature must be in [0, 100], got " + std::to_string(temperature)};
  }
  if (!std::isfinite(top_p) || top_p <= 0.0f || top_p > 1.0f) {
    return Error{"top_p must be in (0, 1], got " + std::to_string(top_p)};
  }
  if (!std::isfinite(min_p) || min_p < 0.0f || min_p > 1.0f) {
    return Error{"min_p must be in [0, 1], got " + std::to_string(min_p)};
  }
  if (top_k < 0) return Error{"top_k must be ≥ 0, got " + std::to_string(top_k)};
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.0f ||
      repetition_penalty > 10.0f) {
    return Error{"repetition_penalty must be in (0, 10], got " +
                 std::to_string(repetition_penalty)};
  }
  if (!std::isfinite(presence_penalty) || std::fabs(presence_penalty) > 2.0f) {
    return Error{"presence_penalty must be in [-2, 2], got " + std::to_string(presence_penalty)};
  }
  if (!std::isfinite(frequency_penalty) || std::fabs(frequency_penalty) > 2.0f) {
    return Error{"frequency_penalty must be in [-2, 2], got " + std::to_string(frequency_penalty)};
  }
  for (const auto& [id, bias] : logit_bias) {
    if (!std::isfinite(bias) || std::fabs(bias) > 100.0f) {
      return Error{"logit_bias of token " + std::to_string(id) + " must be in [-100, 100], got " +
                   std::to_string(bias)};
    }
  }
  if (min_tokens < 0) return Error{"min_tokens must be ≥ 0, got " + std::to_string(min_tokens)};
  return Status::Ok();
}

int32_t argmax(std::span<const float> logits) {
  // First maximum wins on ties, as llama.cpp's greedy sampler.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (params_.constraint) matcher_.emplace(params_.constraint);
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> prompt,
                        std::span<const int32_t> output) {
  const int32_t token = draw(logits, prompt, output);
  if (matcher_) matcher_->accept(token);
  return token;
}

int32_t Sampler::draw(std::span<const float> logits, std::span<const int32_t> prompt,
                      std::span<const int32_t> output) {
  const bool blocking = static_cast<int64_t>(output.size()) < params_.min_tokens &&
                        !params_.min_tokens_blocked.empty();
  if (params_.has_penalties() || !params_.logit_bias.empty() || blocking || matcher_) {
    penalized_.assign(logits.begin(), logits.end());
    const int32_t vocab = static_cast<int32_t>(penalized_.size());
    for (const auto& [id, bias] : params_.logit_bias) {
      if (id >= 0 && id < vocab) penalized_[static_cast<size_t>(id)] += bias;
    }
    if (blocking) {
      for (int32_t id : params_.min_tokens_blocked) {
        if (id >= 0 && id < vocab) {
          penalized_[static_cast<size_t>(id)] = -std::numeric_limits<float>::infinity();
        }
      }
    }
    std::unordered_map<int32_t, int32_t> output_counts;
    for (int32_t id : output) {
      if (id >= 0 && id < vocab) ++output_counts[id];
    }
    if (params_.repetition_penalty != 1.0f) {
      std::unordered_set<int32_t> seen(prompt.begin(), prompt.end());
      for (const auto& [id, count] : output_counts) seen.insert(id);
      for (int32_t id : seen) {
        if (id < 0 || id >= vocab) continue;
        float& l = penalized_[static_cast<size_t>(id)];
        l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
      }
    }
    for (const auto& [id, count] : output_counts) {
      penalized_[static_cast<size_t>(id)] -=
          params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
    }
    // min_tokens may ban the only ids the constraint allows (its stop ids once complete): the
    // constraint wins, over the unbanned logits.
    if (matcher_ && !matcher_->mask_logits(penalized_)) {
      penalized_.assign(logits.begin(), logits.end());
      matcher_->mask_logits(penalized_);
    }
    logits = penalized_;
  }
  if (params_.temperature <= 0.0f) return argmax(logits);

  candidates_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    candidates_[i] = {static_cast<int32_t>(i), logits[i]};
  }
  size_t n = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + params_.top_k, candidates_.end(),
                      ranks_before);
    n = static_cast<size_t>(params_.top_k);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), ranks_before);
  }
  return draw_ranked(n);
}

int32_t Sampler::candidates_needed(int64_t num_output, int32_t vocab_size,
                                   int32_t max_candidates) const {
  const bool blocking = num_output < params_.min_tokens && !params_.min_tokens_blocked.empty();
  if (params_.has_penalties() || !params_.logit_bias.empty() || blocking || matcher_) return 0;
  if (vocab_size < 1) return 0;
  if (params_.temperature <= 0.0f) return max_candidates >= 1 ? 1 : 0;
  if (params_.top_k <= 0) return 0;
  const int32_t k = std::min(params_.top_k, vocab_size);
  return k <= max_candidates ? k : 0;
}

int32_t Sampler::sample(std::span<const Candidate> best) {
  LS_CHECK(!matcher_ && !best.empty()) << "a constrained request sampled from candidates, or none";
  // Greedy: the first in rank order is argmax(row) (ranks_before).
  if (params_.temperature <= 0.0f) return best[0].id;
  // What draw() keeps of the whole row: its first top_k in rank order (all of it when top_k
  // covers the vocabulary, which then is what `best` holds).
  const size_t n =
      params_.top_k > 0 ? std::min(best.size(), static_cast<size_t>(params_.top_k)) : best.size();
  candidates_.assign(best.begin(), best.begin() + static_cast<std::ptrdiff_t>(n));
  return draw_ranked(n);
}

int32_t Sampler::draw_ranked(size_t n) {
  // Softmax over the kept candidates (at temperature 1 for the p-filters, as llama.cpp).
  auto softmax = [&](size_t count, float temperature) {
    probs_.resize(count);
    const float max_logit = candidates_[0].value;
    double sum = 0;
    for (size_t i = 0; i < count; ++i) {
      probs_[i] = std::exp((candidates_[i].value - max_logit) / temperature);
      sum += probs_[i];
    }
    for (size_t i = 0; i < count; ++i) probs_[i] = static_cast<float>(probs_[i] / sum);
  };

  if (params_.top_p < 1.0f) {
    softmax(n, 1.0f);
    double cumulative = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cumulative += probs_[i];
      if (cumulative >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = std::max<size_t>(1, keep);
  }
  if (params_.min_p > 0.0f) {
    // Keep tokens whose probability is at least min_p times the top token's.
    const float threshold = candidates_[0].value + std::log(params_.min_p);
    size_t keep = 1;
    while (keep < n && candidates_[keep].value >= threshold) ++keep;
    n = keep;
  }
  softmax(n, params_.temperature);
  std::discrete_distribution<size_t> draw(probs_.begin(), probs_.begin() + static_cast<long>(n));
  return candidates_[draw(rng_)].id;
}

}  // namespace lightserve::sampling
