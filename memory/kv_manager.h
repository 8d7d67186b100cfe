// KvManager: the coordinator over the block pool (full-layer lanes) and the slot pool (lazy-layer
// lanes) of one KV arena (docs/design.md §5, docs/design.md §11 habits 2 and 3).
//
// Plan, then commit: plan_admit / plan_grow compute which ids a request would get with no side
// effects and return nullopt on a shortage; the matching commit changes state. A plan is valid
// only until the next commit or release on this manager (a stale plan fails an LS_CHECK).
//
// Footprints: a request's footprint is fixed at admission. With the lane layout a hybrid request
// always needs slots_for(hybrid) slots + ceil(T / block_size) blocks, whichever layers turn out
// lazy during prefill, so no change_footprint is needed for test-time selection: the prefill
// decisions only move layers between lanes the request already owns (LayerMap). The per-request
// `full` / `streaming` overrides are known when the request arrives and are admitted with their
// own footprint. (Switching footprints mid-flight would only pay off as an optimisation: a short
// request, T < sink + window, is cheaper with every layer full than with a whole slot.)
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
  IdPlan blocks;
  IdPlan slots;
};

struct GrowPlan {
  uint64_t allocation_id = 0;
  int64_t token_capacity = 0;  // the new capacity
  IdPlan blocks;               // the extra blocks, all lane groups together
};

// Fractions in [0, 1] for the metrics kv_cache_usage_perc and lazy_slot_usage_perc; 0 when the
// arena has none of that kind.
struct KvUsage {
  double block_usage = 0.0;
  double slot_usage = 0.0;
};

class KvManager {
 public:
  // Precondition: layout.validate() is ok (LS_CHECK).
  KvManager(const KvLayout& layout, int32_t num_blocks, int32_t num_slots);
  explicit KvManager(const CapacityPlan& plan)
      : KvManager(plan.layout, plan.num_blocks, plan.num_slots) {}
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
  // with no blocks when the current last block already has room.
  [[nodiscard]] std::optional<GrowPlan> plan_grow(const KvAllocation& allocation,
                                                  int64_t token_capacity) const;
  void commit(KvAllocation& allocation, GrowPlan plan);

  // Gives back the allocation's blocks and slots; the handle is left empty. A handle from another
  // manager, or one already released, is misuse.
  void release(KvAllocation&& allocation);

  // Whether a request could be admitted into the empty arena; false means refuse it at once.
  bool fits_when_empty(Footprint footprint, int64_t token_capacity) const;

  int32_t num_free_blocks() const { return block_pool_.num_free(); }
  int32_t num_free_slots() const { return slot_pool_.num_free(); }
  int32_t num_total_blocks() const { return block_pool_.num_total(); }
  int32_t num_total_slots() const { return slot_pool_.num_total(); }
  int32_t num_live_allocations() const { return static_cast<int32_t>(live_.size()); }
  KvUsage usage() const;

  // Every id is either free or owned by exactly one live allocation; free + owned = total; each
  // allocation's table has the shape its footprint and capacity demand; layer maps are sound.
  // O(num_blocks + num_slots): for tests and debug builds' step checks.
  void check_invariants() const;

 private:
  KvLayout layout_;
  IdPool block_pool_;
  IdPool slot_pool_;
  uint64_t next_allocation_id_ = 1;
  std::map<uint64_t, const RequestKv*> live_;  // for the audit; the handles own the RequestKv
};

}  // namespace lightserve::memory
