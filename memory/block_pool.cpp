#include "memory/block_pool.h"

#include <utility>

namespace lightserve::memory {

BlockPool::BlockPool(int32_t num_blocks) : free_list_(num_blocks, "block") {}

std::optional<BlockPlan> BlockPool::plan(int32_t count) const {
  std::optional<std::vector<int32_t>> ids = free_list_.peek(count);
  if (!ids) return std::nullopt;
  return BlockPlan{std::move(*ids), free_list_.version()};
}

std::vector<BlockId> BlockPool::commit(BlockPlan plan) {
  free_list_.take(plan.block_ids, plan.pool_version);
  return std::move(plan.block_ids);
}

void BlockPool::release(std::span<const BlockId> block_ids) {
  free_list_.give_back(block_ids);
}

}  // namespace lightserve::memory
