// What one request owns in the KV arena, and the move-only handle that owns it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "memory/id_pool.h"
#include "memory/kv_layout.h"
#include "memory/layer_map.h"

namespace lightserve::memory {

class KvManager;

// A request's blocks, one row per lane group (ceil(full_layers / lanes_per_block) rows; 1 for a
// hybrid request, 0 for streaming). All rows have the same length: block j of every row holds
// tokens [j · block_size, (j + 1) · block_size) for that group's lanes.
class BlockTable {
 public:
  BlockTable() = default;
  explicit BlockTable(int32_t num_lane_groups);

  int32_t num_lane_groups() const { return static_cast<int32_t>(groups_.size()); }
  int64_t num_blocks_per_group() const;
  int64_t num_blocks() const { return num_lane_groups() * num_blocks_per_group(); }
  std::span<const BlockId> group(int32_t lane_group) const;
  BlockId block(int32_t lane_group, int64_t index) const;
  std::vector<BlockId> all_block_ids() const;

  // Appends `block_ids` split evenly: lane group g gets the g-th equal part, in order.
  void append(std::span<const BlockId> block_ids);

 private:
  std::vector<std::vector<BlockId>> groups_;
};

struct RequestKv {
  Footprint footprint;
  int64_t token_capacity = 0;  // tokens the block table has room for (prompt + reserved growth)
  BlockTable block_table;
  std::vector<SlotId> slot_ids;  // slots_for(footprint) of them, fixed for the request's life
  LayerMap layer_map;            // filled in by the model during prefill
};

// Move-only handle to one request's KV. It gives its blocks and slots back through its
// KvManager: explicitly with KvManager::release, or — chosen so that an early return or an
// aborted request can never leak KV memory — from its destructor if still holding them. The
// manager must outlive every handle (KvManager's destructor checks). Moving from a handle leaves
// it empty. Not thread-safe: handles live on the engine thread with their manager.
class KvAllocation {
 public:
  KvAllocation() = default;
  KvAllocation(KvAllocation&& other) noexcept;
  KvAllocation& operator=(KvAllocation&& other) noexcept;  // returns what *this held first
  KvAllocation(const KvAllocation&) = delete;
  KvAllocation& operator=(const KvAllocation&) = delete;
  ~KvAllocation();

  bool empty() const { return kv_ == nullptr; }
  uint64_t id() const { return id_; }  // unique per manager; 0 when empty

  // Preconditions for all below: !empty().
  const RequestKv& kv() const;
  const Footprint& footprint() const { return kv().footprint; }
  int64_t token_capacity() const { return kv().token_capacity; }
  const BlockTable& block_table() const { return kv().block_table; }
  const std::vector<SlotId>& slot_ids() const { return kv().slot_ids; }
  const LayerMap& layer_map() const { return kv().layer_map; }
  LayerMap& layer_map();  // the only part the model edits (during prefill)

  // The arena row (KvLayout's row arithmetic) that holds `token` of the request's full lane
  // `lane` (in the block arena) or lazy lane `lane` (in the slot arena, on the ring).
  // Preconditions: the lane exists; a full token lies within token_capacity().
  int64_t full_row(const KvLayout& layout, int32_t lane, int64_t token) const;
  int64_t lazy_row(const KvLayout& layout, int32_t lane, int64_t token) const;

 private:
  friend class KvManager;
  KvAllocation(KvManager* manager, uint64_t id, std::unique_ptr<RequestKv> kv);
  void reset();  // gives memory back if held; leaves the handle empty

  KvManager* manager_ = nullptr;
  uint64_t id_ = 0;
  std::unique_ptr<RequestKv> kv_;  // on the heap so the manager's audit pointer survives moves
};

}  // namespace lightserve::memory
