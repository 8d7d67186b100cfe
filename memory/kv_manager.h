// KvManager: the coordinator over the one page pool of a KV arena, which full and lazy layers
// both draw from (docs/design.md §5, docs/design.md §11 habits 2 and 3).
//
// Plan, then commit: plan_admit / plan_grow compute which pages a request would get with no side
// effects and return nullopt on a shortage; the matching commit changes state. A plan is valid
// only until the next commit or release on this manager (a stale plan fails an LS_CHECK).
//
// Footprints: a request's footprint is fixed at admission. A hybrid request holds
// pages_for(T, hybrid) pages — P full lanes of ceil(T / block_size) pages and L - P lazy lanes of
// ceil(min(T, sink + window) / block_size) — whichever layers turn out lazy during prefill: the
// prefill decisions only move layers between lanes the request already owns (LayerMap), so at
// most P full-length lanes (plus the prefill scratch layer outside the pool) ever exist. Below
// sink + window tokens a lazy lane costs what a full one does, so a short request costs exactly
// what full attention costs. The per-request `full` / `streaming` overrides are other footprints
// over the same pool.
//
// Misuse (a foreign or empty handle, a stale plan, shrinking through plan_grow, an unsupported
// footprint) fails an LS_CHECK. Not thread-safe: one engine thread owns the manager and all its
// handles; the manager must outlive them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "memory/capacity.h"
#include "memory/id_pool.h"
#include "memory/kv_allocation.h"
#include "memory/kv_layout.h"

namespace lightserve::memory {

struct AdmitPlan {
  Footprint footprint;
  int64_t token_capacity = 0;
  IdPlan pages;  // the full lanes' pages, then the lazy lanes'
};

struct GrowPlan {
  uint64_t allocation_id = 0;
  int64_t token_capacity = 0;  // the new capacity
  IdPlan pages;                // the extra pages: the full lanes', then the lazy lanes'
};

// Fractions in [0, 1] of all pages: in use (the metric kv_cache_usage_perc), and held by full and
// by lazy lanes (its per-kind breakdown; full + lazy = used).
struct KvUsage {
  double used = 0.0;
  double full = 0.0;
  double lazy = 0.0;
};

class KvManager {
 public:
  // Precondition: layout.validate() is ok (LS_CHECK).
  KvManager(const KvLayout& layout, int32_t num_pages);
  explicit KvManager(const CapacityPlan& plan) : KvManager(plan.layout, plan.num_pages) {}
  KvManager(const KvManager&) = delete;
  KvManager& operator=(const KvManager&) = delete;
  ~KvManager();  // LS_CHECKs that no allocation is still live (a handle would dangle)

  const KvLayout& layout() const { return layout_; }

  // Room for `token_capacity` tokens under `footprint`. Precondition:
  // layout().check_footprint(footprint) is ok and token_capacity >= 0.
  [[nodiscard]] std::optional<AdmitPlan> plan_admit(Footprint footprint,
                                                    int64_t token_capacity) const;
  [[nodiscard]] KvAllocation commit(AdmitPlan plan);

  // Room for `token_capacity` tokens in total (>= the allocation's current capacity); a plan
  // with no pages when the current last pages already have room (or the lazy lanes are whole).
  [[nodiscard]] std::optional<GrowPlan> plan_grow(const KvAllocation& allocation,
                                                  int64_t token_capacity) const;
  void commit(KvAllocation& allocation, GrowPlan plan);

  // Gives back the allocation's pages; the handle is left empty. A handle from another manager,
  // or one already released, is misuse.
  void release(KvAllocation&& allocation);

  // Whether a request could be admitted into the empty arena; false means refuse it at once.
  bool fits_when_empty(Footprint footprint, int64_t token_capacity) const;

  int32_t num_free_pages() const { return page_pool_.num_free(); }
  int32_t num_total_pages() const { return page_pool_.num_total(); }
  int64_t num_full_lane_pages() const { return num_full_lane_pages_; }  // held by full lanes
  int64_t num_lazy_lane_pages() const { return num_lazy_lane_pages_; }  // held by lazy lanes
  int32_t num_live_allocations() const { return static_cast<int32_t>(live_.size()); }
  KvUsage usage() const;

  // Every page is either free or owned by exactly one live allocation; free + owned = total; each
  // allocation's tables have the shape its footprint and capacity demand; the per-kind counts
  // add up; layer maps are sound. O(num_pages): for tests and debug builds' step checks.
  void check_invariants() const;

 private:
  KvLayout layout_;
  IdPool page_pool_;
  int64_t num_full_lane_pages_ = 0;
  int64_t num_lazy_lane_pages_ = 0;
  uint64_t next_allocation_id_ = 1;
  std::map<uint64_t, const RequestKv*> live_;  // for the audit; the handles own the RequestKv
};

}  // namespace lightserve::memory
