// The KV arena of docs/design.md §5: one byte budget carved into pages of block_size tokens × one
// layer's K/V, which full and lazy layers both draw from (memory::KvManager hands out their ids),
// plus the storage those ids index (f16 or bf16, 2 bytes a value: kv_type), in the backend's memory
// (device memory on a GPU). Storage is allocated untouched, so on the CPU resident memory grows
// only with what requests actually write.
#pragma once

#include <cstdint>
#include <memory>

#include "base/status.h"
#include "kernels/backend.h"
#include "memory/capacity.h"
#include "memory/kv_manager.h"
#include "model/config.h"
#include "model/lighttransfer.h"

namespace lightserve::model {

class KvArena {
 public:
  // Lays the arena out for settings.lazy_fraction (mode full lays it out for f = 0, streaming for
  // f = 1) and carves `budget_bytes` for the most sequences of `context_tokens`, at
  // kernels::kv_type_bytes(kv_type) a value. Errors name the setting, or both sizes when not
  // even one sequence fits.
  static Result<std::unique_ptr<KvArena>> create(kernels::Backend& backend,
                                                 const LlamaConfig& config,
                                                 const LightTransferSettings& settings,
                                                 int64_t budget_bytes, int64_t context_tokens,
                                                 int32_t block_size = 16,
                                                 kernels::DType kv_type = kernels::DType::kF16);
  // The capacity plan create() would carve, without allocating anything (start-up checks).
  static Result<memory::CapacityPlan> plan_for(const LlamaConfig& config,
                                               const LightTransferSettings& settings,
                                               int64_t budget_bytes, int64_t context_tokens,
                                               int32_t block_size = 16,
                                               kernels::DType kv_type = kernels::DType::kF16);
  // The smallest arena holding `num_sequences` sequences of `context_tokens` (the CLI's one-off
  // runs).
  static Result<std::unique_ptr<KvArena>> create_for(
      kernels::Backend& backend, const LlamaConfig& config, const LightTransferSettings& settings,
      int64_t context_tokens, int32_t num_sequences = 1, int32_t block_size = 16);

  memory::KvManager& manager() { return *manager_; }
  const memory::CapacityPlan& plan() const { return plan_; }
  const memory::KvLayout& layout() const { return plan_.layout; }
  int64_t row_elements() const { return row_; }  // kv_heads · head_dim

  // Row 0 of the key (values=false) or value storage: the arena row r (memory::KvLayout's row
  // arithmetic) starts r · row_elements() elements after it.
  uint16_t* data(bool values);
  // First row of a page, and the elements from one page to the next.
  uint16_t* page_rows(bool values, memory::PageId page);
  int64_t page_stride() const;

 private:
  KvArena() = default;
  memory::CapacityPlan plan_;
  int64_t row_ = 0;
  std::unique_ptr<memory::KvManager> manager_;
  kernels::Buffer k_, v_;
};

}  // namespace lightserve::model
