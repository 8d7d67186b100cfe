// BlockPool: the block manager (docs/design.md §11 habit 3). Blocks hold full-layer lanes,
// block_size tokens each; a request's block table grows with its length.
//
// Plan, then commit (habit 2): plan() has no side effects and returns nullopt on a shortage;
// commit() takes exactly the planned ids. A plan is valid until the next commit or release on
// this pool. Misuse (stale plan, double release, foreign id) fails an LS_CHECK.
// Not thread-safe: owned by the engine thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "memory/id_free_list.h"

namespace lightserve::memory {

using BlockId = int32_t;

struct BlockPlan {
  std::vector<BlockId> block_ids;  // what commit() will hand out, in order
  uint64_t pool_version = 0;       // the pool state the plan was made against
};

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  [[nodiscard]] std::optional<BlockPlan> plan(int32_t count) const;
  [[nodiscard]] std::vector<BlockId> commit(BlockPlan plan);
  void release(std::span<const BlockId> block_ids);

  int32_t num_free() const { return free_list_.num_free(); }
  int32_t num_total() const { return free_list_.num_total(); }
  bool is_free(BlockId id) const { return free_list_.is_free(id); }
  void check_invariants() const { free_list_.check_invariants(); }

 private:
  IdFreeList free_list_;
};

}  // namespace lightserve::memory
