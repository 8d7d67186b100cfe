#include "memory/slot_pool.h"

#include <utility>

namespace lightserve::memory {

SlotPool::SlotPool(int32_t num_slots) : free_list_(num_slots, "slot") {}

std::optional<SlotPlan> SlotPool::plan(int32_t count) const {
  std::optional<std::vector<int32_t>> ids = free_list_.peek(count);
  if (!ids) return std::nullopt;
  return SlotPlan{std::move(*ids), free_list_.version()};
}

std::vector<SlotId> SlotPool::commit(SlotPlan plan) {
  free_list_.take(plan.slot_ids, plan.pool_version);
  return std::move(plan.slot_ids);
}

void SlotPool::release(std::span<const SlotId> slot_ids) {
  free_list_.give_back(slot_ids);
}

}  // namespace lightserve::memory
