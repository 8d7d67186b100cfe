#include "model/kv_arena.h"

#include <new>
#include <string>

namespace lightserve::model {
namespace {

Result<memory::KvLayout> layout_for(const LlamaConfig& config,
                                    const LightTransferSettings& settings, int32_t block_size,
                                    kernels::DType kv_type) {
  double fraction = settings.lazy_fraction;
  if (settings.mode == LtMode::kFull) fraction = 0.0;
  if (settings.mode == LtMode::kStreaming) fraction = 1.0;
  const int64_t row = static_cast<int64_t>(config.num_kv_heads) * config.head_dim;
  return memory::KvLayout::for_lazy_fraction(config.num_layers, fraction, block_size, settings.sink,
                                             settings.window,
                                             2 * row * kernels::kv_type_bytes(kv_type));
}

}  // namespace

Result<memory::CapacityPlan> KvArena::plan_for(const LlamaConfig& config,
                                               const LightTransferSettings& settings,
                                               int64_t budget_bytes, int64_t context_tokens,
                                               int32_t block_size, kernels::DType kv_type) {
  if (!kernels::is_kv_type(kv_type)) return Error{"the KV cache type must be f16 or bf16"};
  auto layout = layout_for(config, settings, block_size, kv_type);
  if (!layout) return layout.error();
  return memory::plan_capacity(layout.value(), budget_bytes, context_tokens);
}

Result<std::unique_ptr<KvArena>> KvArena::create(kernels::Backend& backend,
                                                 const LlamaConfig& config,
                                                 const LightTransferSettings& settings,
                                                 int64_t budget_bytes, int64_t context_tokens,
                                                 int32_t block_size, kernels::DType kv_type) {
  auto plan = plan_for(config, settings, budget_bytes, context_tokens, block_size, kv_type);
  if (!plan) return plan.error();
  std::unique_ptr<KvArena> arena(new KvArena());
  arena->plan_ = plan.value();
  arena->row_ = static_cast<int64_t>(config.num_kv_heads) * config.head_dim;
  const int64_t elements =
      static_cast<int64_t>(arena->plan_.num_pages) * arena->plan_.layout.block_size * arena->row_;
  try {
    arena->k_.reserve<uint16_t>(backend, elements);
    arena->v_.reserve<uint16_t>(backend, elements);
  } catch (const std::bad_alloc&) {
    return Error{"cannot allocate a KV arena of " + std::to_string(budget_bytes) + " bytes on " +
                 backend.description()};
  }
  arena->manager_ = std::make_unique<memory::KvManager>(arena->plan_);
  return arena;
}

Result<std::unique_ptr<KvArena>> KvArena::create_for(kernels::Backend& backend,
                                                     const LlamaConfig& config,
                                                     const LightTransferSettings& settings,
                                                     int64_t context_tokens, int32_t num_sequences,
                                                     int32_t block_size) {
  auto layout = layout_for(config, settings, block_size, kernels::DType::kF16);
  if (!layout) return layout.error();
  const memory::KvLayout& l = layout.value();
  // Room for the layout's own footprint and for the footprint the mode needs.
  memory::Footprint footprint = l.hybrid_footprint();
  const int64_t per_sequence = l.bytes_for(context_tokens, footprint);
  return create(backend, config, settings, per_sequence * num_sequences, context_tokens,
                block_size);
}

uint16_t* KvArena::data(bool values) {
  return (values ? v_ : k_).get<uint16_t>();
}

uint16_t* KvArena::page_rows(bool values, memory::PageId page) {
  return data(values) + plan_.layout.page_row(page, 0) * row_;
}

int64_t KvArena::page_stride() const {
  return plan_.layout.block_size * row_;
}

}  // namespace lightserve::model
