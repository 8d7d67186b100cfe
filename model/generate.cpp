#include "model/generate.h"

namespace lightserve::model {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Result<GenerateResult> generate(LlamaModel& model, SequenceKv& kv, std::span<const int32_t> prompt,
                                const GenerateParams& params,
                                const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) return Error{"the prompt is empty"};
  if (Status s = params.sampling.validate(); !s) return Error{s.message()};
  GenerateResult result;
  std::vector<float> logits;
  const auto start = std::chrono::steady_clock::now();
  const size_t chunk =
      params.prefill_chunk > 0 ? static_cast<size_t>(params.prefill_chunk) : prompt.size();
  for (size_t pos = 0; pos < prompt.size(); pos += chunk) {
    const BatchEntry entry{&kv, prompt.subspan(pos, std::min(chunk, prompt.size() - pos)), false};
    if (Status s = model.forward({&entry, 1}, logits); !s) return Error{s.message()};
  }
  result.prefill_seconds = seconds_since(start);

  const auto decode_start = std::chrono::steady_clock::now();
  sampling::Sampler sampler(params.sampling);
  const Tokenizer& tok = model.tokenizer();
  while (static_cast<int32_t>(result.tokens.size()) < params.max_tokens) {
    const int32_t id = sampler.sample(logits, prompt, result.tokens);
    if (!params.ignore_eos && tok.is_end_of_generation(id)) {
      result.stopped = true;
      break;
    }
    result.tokens.push_back(id);
    if (on_token && !on_token(id)) break;
    if (static_cast<int32_t>(result.tokens.size()) == params.max_tokens ||
        kv.size() >= kv.capacity()) {
      break;
    }
    const BatchEntry entry{&kv, std::span(&id, 1), false};
    if (Status s = model.forward({&entry, 1}, logits); !s) return Error{s.message()};
  }
  result.decode_seconds = seconds_since(decode_start);
  return result;
}

}  // namespace lightserve::model
