#include "memory/kv_allocation.h"

#include <utility>

#include "base/check.h"
#include "memory/kv_manager.h"

namespace lightserve::memory {

PageTable::PageTable(int32_t num_lanes) : lanes_(static_cast<size_t>(num_lanes)) {
  LS_CHECK(num_lanes >= 0) << num_lanes << " lanes";
}

int64_t PageTable::num_pages_per_lane() const {
  return lanes_.empty() ? 0 : static_cast<int64_t>(lanes_.front().size());
}

std::span<const PageId> PageTable::lane(int32_t lane) const {
  LS_CHECK(lane >= 0 && lane < num_lanes()) << "lane " << lane;
  return lanes_[static_cast<size_t>(lane)];
}

PageId PageTable::page(int32_t lane_index, int64_t index) const {
  std::span<const PageId> row = lane(lane_index);
  LS_CHECK(index >= 0 && index < static_cast<int64_t>(row.size())) << "page index " << index;
  return row[static_cast<size_t>(index)];
}

std::vector<PageId> PageTable::all_page_ids() const {
  std::vector<PageId> ids;
  ids.reserve(static_cast<size_t>(num_pages()));
  for (const std::vector<PageId>& row : lanes_) ids.insert(ids.end(), row.begin(), row.end());
  return ids;
}

void PageTable::append(std::span<const PageId> page_ids) {
  if (lanes_.empty()) {
    LS_CHECK(page_ids.empty()) << "pages appended to a table without lanes";
    return;
  }
  LS_CHECK(page_ids.size() % lanes_.size() == 0)
      << page_ids.size() << " pages do not split over " << lanes_.size() << " lanes";
  const size_t per_lane = page_ids.size() / lanes_.size();
  for (size_t l = 0; l < lanes_.size(); ++l) {
    std::span<const PageId> part = page_ids.subspan(l * per_lane, per_lane);
    lanes_[l].insert(lanes_[l].end(), part.begin(), part.end());
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
  const PageId page = full_pages().page(lane, token / layout.block_size);
  return layout.page_row(page, token % layout.block_size);
}

int64_t KvAllocation::lazy_row(const KvLayout& layout, int32_t lane, int64_t token) const {
  const int32_t ring_row = layout.ring_row(token);
  const PageId page = lazy_pages().page(lane, ring_row / layout.block_size);
  return layout.page_row(page, ring_row % layout.block_size);
}

}  // namespace lightserve::memory
