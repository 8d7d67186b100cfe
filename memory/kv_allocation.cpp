#include "memory/kv_allocation.h"

#include <utility>

#include "base/check.h"
#include "memory/kv_manager.h"

namespace lightserve::memory {

BlockTable::BlockTable(int32_t num_lane_groups) : groups_(static_cast<size_t>(num_lane_groups)) {
  LS_CHECK(num_lane_groups >= 0) << num_lane_groups << " lane groups";
}

int64_t BlockTable::num_blocks_per_group() const {
  return groups_.empty() ? 0 : static_cast<int64_t>(groups_.front().size());
}

std::span<const BlockId> BlockTable::group(int32_t lane_group) const {
  LS_CHECK(lane_group >= 0 && lane_group < num_lane_groups()) << "lane group " << lane_group;
  return groups_[static_cast<size_t>(lane_group)];
}

BlockId BlockTable::block(int32_t lane_group, int64_t index) const {
  std::span<const BlockId> row = group(lane_group);
  LS_CHECK(index >= 0 && index < static_cast<int64_t>(row.size())) << "block index " << index;
  return row[static_cast<size_t>(index)];
}

std::vector<BlockId> BlockTable::all_block_ids() const {
  std::vector<BlockId> ids;
  ids.reserve(static_cast<size_t>(num_blocks()));
  for (const std::vector<BlockId>& row : groups_) ids.insert(ids.end(), row.begin(), row.end());
  return ids;
}

void BlockTable::append(std::span<const BlockId> block_ids) {
  if (groups_.empty()) {
    LS_CHECK(block_ids.empty()) << "blocks appended to a table without lane groups";
    return;
  }
  LS_CHECK(block_ids.size() % groups_.size() == 0)
      << block_ids.size() << " blocks do not split over " << groups_.size() << " lane groups";
  const size_t per_group = block_ids.size() / groups_.size();
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::span<const BlockId> part = block_ids.subspan(g * per_group, per_group);
    groups_[g].insert(groups_[g].end(), part.begin(), part.end());
  }
}

KvAllocation::KvAllocation(KvManager* manager, uint64_t id, std::unique_ptr<RequestKv> kv)
    : manager_(manager), id_(id), kv_(std::move(kv)) {}

KvAllocation::KvAllocation(KvAllocation&& other) noexcept
    : manager_(std::exchange(other.manager_, nullptr)),
      id_(std::exchange(other.id_, 0)),
      kv_(std::move(other.kv_)) {}

KvAllocation& KvAllocation::operator=(KvAllocation&& other) noexcept {
  if (this != &other) {
    reset();
    manager_ = std::exchange(other.manager_, nullptr);
    id_ = std::exchange(other.id_, 0);
    kv_ = std::move(other.kv_);
  }
  return *this;
}

KvAllocation::~KvAllocation() {
  reset();
}

void KvAllocation::reset() {
  if (empty()) return;
  manager_->release(std::move(*this));
}

const RequestKv& KvAllocation::kv() const {
  LS_CHECK(!empty()) << "use of an empty (released or moved-from) KvAllocation";
  return *kv_;
}

LayerMap& KvAllocation::layer_map() {
  LS_CHECK(!empty()) << "use of an empty (released or moved-from) KvAllocation";
  return kv_->layer_map;
}

int64_t KvAllocation::full_row(const KvLayout& layout, int32_t lane, int64_t token) const {
  const LanePlace place = layout.place_full_lane(lane);
  const BlockId block = block_table().block(place.container, token / layout.block_size);
  return layout.block_row(block, place.lane, token % layout.block_size);
}

int64_t KvAllocation::lazy_row(const KvLayout& layout, int32_t lane, int64_t token) const {
  const LanePlace place = layout.place_lazy_lane(lane);
  const SlotId slot = slot_ids()[static_cast<size_t>(place.container)];
  return layout.slot_row(slot, place.lane, layout.ring_row(token));
}

}  // namespace lightserve::memory
