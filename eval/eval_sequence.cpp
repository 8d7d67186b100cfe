#include <string>

#include "eval/eval_tasks.h"

namespace lightserve::eval {

Result<EvalSequence> make_eval_sequence(const model::LlamaModel& model,
                                        const model::LightTransferSettings& settings,
                                        int32_t capacity) {
  const model::LlamaConfig& config = model.config();
  EvalSequence out;
  auto arena = model::KvArena::create_for(model.backend(), config, settings, capacity);
  if (!arena) return arena.error();
  out.arena = std::move(arena).value();
  auto seq = model::HybridSequence::create(*out.arena, config, settings, capacity);
  if (!seq) return seq.error();
  out.seq = std::move(seq).value();
  return out;
}

std::string lazy_layer_list(const model::HybridSequence& seq) {
  std::string out;
  const memory::LayerMap& map = seq.layer_map();
  for (int32_t l = 0; l < map.num_layers(); ++l) {
    if (!map.is_lazy(l)) continue;
    if (!out.empty()) out += ",";
    out += std::to_string(l);
  }
  return out;
}

}  // namespace lightserve::eval
