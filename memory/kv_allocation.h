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

// One kind of a request's lanes (its full lanes, or its lazy lanes) and each lane's pages: row l
// is lane l's page table. All rows have the same length: page j of a full lane holds tokens
// [j · block_size, (j + 1) · block_size); page j of a lazy lane holds those ring rows.
class PageTable {
 public:
  PageTable() = default;
  explicit PageTable(int32_t num_lanes);

  int32_t num_lanes() const { return static_cast<int32_t>(lanes_.size()); }
  int64_t num_pages_per_lane() const;
  int64_t num_pages() const { return num_lanes() * num_pages_per_lane(); }
  std::span<const PageId> lane(int32_t lane) const;
  PageId page(int32_t lane, int64_t index) const;
  std::vector<PageId> all_page_ids() const;

  // Appends `page_ids` split evenly: lane l gets the l-th equal part, in order.
  void append(std::span<const PageId> page_ids);

 private:
  std::vector<std::vector<PageId>> lanes_;
};

struct RequestKv {
  Footprint footprint;
  int64_t token_capacity = 0;  // tokens the page tables have room for (prompt + reserved growth)
  PageTable full_pages;        // footprint.full_layers lanes of full_lane_pages(capacity) pages
  PageTable lazy_pages;        // footprint.lazy_layers lanes of lazy_lane_pages(capacity) pages
  LayerMap layer_map;          // filled in by the model during prefill
};

// Move-only handle to one request's KV. It gives its pages back through its
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
  const PageTable& full_pages() const { return kv().full_pages; }
  const PageTable& lazy_pages() const { return kv().lazy_pages; }
  int64_t num_pages() const { return full_pages().num_pages() + lazy_pages().num_pages(); }
  const LayerMap& layer_map() const { return kv().layer_map; }
  LayerMap& layer_map();  // the only part the model edits (during prefill)

  // The arena row (KvLayout's row arithmetic) that holds `token` of the request's full lane
  // `lane`, or of its lazy lane `lane` (on the ring). Preconditions: the lane exists; a full token
  // lies within token_capacity(), a lazy token's ring row within it too.
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
