#include "memory/kv_manager.h"

#include <limits>
#include <utility>
#include <vector>

#include "base/check.h"

namespace lightserve::memory {

namespace {

// Block counts are int64 in the layout math; pools hand out int32 ids. A count above the pool
// size is a plain shortage.
std::optional<int32_t> as_pool_count(int64_t count, int32_t pool_total) {
  if (count > pool_total) return std::nullopt;
  return static_cast<int32_t>(count);
}

}  // namespace

KvManager::KvManager(const KvLayout& layout, int32_t num_blocks, int32_t num_slots)
    : layout_(layout), block_pool_(num_blocks, "block"), slot_pool_(num_slots, "slot") {
  LS_CHECK(layout.validate().ok()) << layout.validate().message();
}

KvManager::~KvManager() {
  LS_CHECK(live_.empty()) << live_.size() << " KvAllocation(s) outlive their KvManager";
}

std::optional<AdmitPlan> KvManager::plan_admit(Footprint footprint, int64_t token_capacity) const {
  LS_CHECK(layout_.check_footprint(footprint).ok()) << layout_.check_footprint(footprint).message();
  LS_CHECK(token_capacity >= 0) << "token capacity " << token_capacity;
  const std::optional<int32_t> num_blocks =
      as_pool_count(layout_.blocks_for(token_capacity, footprint), num_total_blocks());
  if (!num_blocks) return std::nullopt;
  std::optional<IdPlan> blocks = block_pool_.plan(*num_blocks);
  if (!blocks) return std::nullopt;
  std::optional<IdPlan> slots = slot_pool_.plan(layout_.slots_for(footprint));
  if (!slots) return std::nullopt;
  return AdmitPlan{footprint, token_capacity, std::move(*blocks), std::move(*slots)};
}

KvAllocation KvManager::commit(AdmitPlan plan) {
  auto kv = std::make_unique<RequestKv>();
  kv->footprint = plan.footprint;
  kv->token_capacity = plan.token_capacity;
  kv->block_table = BlockTable(layout_.num_lane_groups(plan.footprint));
  kv->block_table.append(block_pool_.commit(std::move(plan.blocks)));
  kv->slot_ids = slot_pool_.commit(std::move(plan.slots));
  kv->layer_map =
      LayerMap(layout_.num_layers, plan.footprint.full_layers, plan.footprint.lazy_layers);
  const uint64_t id = next_allocation_id_++;
  live_.emplace(id, kv.get());
  return KvAllocation(this, id, std::move(kv));
}

std::optional<GrowPlan> KvManager::plan_grow(const KvAllocation& allocation,
                                             int64_t token_capacity) const {
  LS_CHECK(!allocation.empty() && allocation.manager_ == this)
      << "plan_grow on an allocation this manager does not hold";
  const RequestKv& kv = allocation.kv();
  LS_CHECK(token_capacity >= kv.token_capacity)
      << "plan_grow cannot shrink " << kv.token_capacity << " to " << token_capacity << " tokens";
  const int64_t extra = layout_.blocks_for(token_capacity, kv.footprint) -
                        layout_.blocks_for(kv.token_capacity, kv.footprint);
  const std::optional<int32_t> num_blocks = as_pool_count(extra, num_total_blocks());
  if (!num_blocks) return std::nullopt;
  std::optional<IdPlan> blocks = block_pool_.plan(*num_blocks);
  if (!blocks) return std::nullopt;
  return GrowPlan{allocation.id(), token_capacity, std::move(*blocks)};
}

void KvManager::commit(KvAllocation& allocation, GrowPlan plan) {
  LS_CHECK(!allocation.empty() && allocation.manager_ == this &&
           allocation.id() == plan.allocation_id)
      << "grow plan for allocation " << plan.allocation_id << " committed to allocation "
      << allocation.id();
  RequestKv& kv = *allocation.kv_;
  kv.block_table.append(block_pool_.commit(std::move(plan.blocks)));
  kv.token_capacity = plan.token_capacity;
}

void KvManager::release(KvAllocation&& allocation) {
  LS_CHECK(!allocation.empty()) << "release of an empty (released or moved-from) KvAllocation";
  LS_CHECK(allocation.manager_ == this)
      << "allocation " << allocation.id() << " released to a manager that does not hold it";
  auto live = live_.find(allocation.id());
  LS_CHECK(live != live_.end() && live->second == allocation.kv_.get())
      << "allocation " << allocation.id() << " is not live";
  live_.erase(live);
  block_pool_.release(allocation.kv_->block_table.all_block_ids());
  slot_pool_.release(allocation.kv_->slot_ids);
  allocation.kv_.reset();
  allocation.manager_ = nullptr;
  allocation.id_ = 0;
}

bool KvManager::fits_when_empty(Footprint footprint, int64_t token_capacity) const {
  if (!layout_.check_footprint(footprint).ok() || token_capacity < 0) return false;
  return layout_.blocks_for(token_capacity, footprint) <= num_total_blocks() &&
         layout_.slots_for(footprint) <= num_total_slots();
}

KvUsage KvManager::usage() const {
  auto used_fraction = [](int32_t num_free, int32_t num_total) {
    return num_total == 0 ? 0.0 : static_cast<double>(num_total - num_free) / num_total;
  };
  return {used_fraction(num_free_blocks(), num_total_blocks()),
          used_fraction(num_free_slots(), num_total_slots())};
}

void KvManager::check_invariants() const {
  block_pool_.check_invariants();
  slot_pool_.check_invariants();
  std::vector<uint64_t> block_owner(static_cast<size_t>(num_total_blocks()), 0);
  std::vector<uint64_t> slot_owner(static_cast<size_t>(num_total_slots()), 0);
  int64_t num_owned_blocks = 0;
  int64_t num_owned_slots = 0;
  for (const auto& [id, kv] : live_) {
    const Footprint footprint = kv->footprint;
    LS_CHECK(kv->block_table.num_lane_groups() == layout_.num_lane_groups(footprint) &&
             kv->block_table.num_blocks() == layout_.blocks_for(kv->token_capacity, footprint))
        << "allocation " << id << " holds " << kv->block_table.num_blocks() << " blocks for "
        << kv->token_capacity << " tokens";
    LS_CHECK(static_cast<int32_t>(kv->slot_ids.size()) == layout_.slots_for(footprint))
        << "allocation " << id << " holds " << kv->slot_ids.size() << " slots";
    LS_CHECK(kv->layer_map.max_full_layers() == footprint.full_layers &&
             kv->layer_map.max_lazy_layers() == footprint.lazy_layers)
        << "allocation " << id << " layer map does not match its footprint";
    kv->layer_map.check_invariants();
    for (BlockId block : kv->block_table.all_block_ids()) {
      LS_CHECK(!block_pool_.is_free(block))
          << "block " << block << " of allocation " << id << " is on the free list";
      uint64_t& owner = block_owner[static_cast<size_t>(block)];
      LS_CHECK(owner == 0) << "block " << block << " owned by " << owner << " and " << id;
      owner = id;
      ++num_owned_blocks;
    }
    for (SlotId slot : kv->slot_ids) {
      LS_CHECK(!slot_pool_.is_free(slot))
          << "slot " << slot << " of allocation " << id << " is on the free list";
      uint64_t& owner = slot_owner[static_cast<size_t>(slot)];
      LS_CHECK(owner == 0) << "slot " << slot << " owned by " << owner << " and " << id;
      owner = id;
      ++num_owned_slots;
    }
  }
  LS_CHECK(num_owned_blocks + num_free_blocks() == num_total_blocks())
      << num_owned_blocks << " owned + " << num_free_blocks()
      << " free blocks != " << num_total_blocks();
  LS_CHECK(num_owned_slots + num_free_slots() == num_total_slots())
      << num_owned_slots << " owned + " << num_free_slots()
      << " free slots != " << num_total_slots();
}

}  // namespace lightserve::memory
