#include "memory/kv_manager.h"

#include <span>
#include <utility>
#include <vector>

#include "base/check.h"

namespace lightserve::memory {

namespace {

// Page counts are int64 in the layout math; the pool hands out int32 ids. A count above the pool
// size is a plain shortage.
std::optional<int32_t> as_pool_count(int64_t count, int32_t pool_total) {
  if (count > pool_total) return std::nullopt;
  return static_cast<int32_t>(count);
}

// Appends `ids` to the request's tables: the first full_layers · full_per_lane go to the full
// lanes, the rest to the lazy lanes.
void append_pages(RequestKv& kv, const std::vector<int32_t>& ids, int64_t full_per_lane) {
  const auto num_full = static_cast<size_t>(kv.footprint.full_layers * full_per_lane);
  LS_CHECK(num_full <= ids.size()) << ids.size() << " pages for " << num_full << " full ones";
  const std::span<const int32_t> all(ids);
  kv.full_pages.append(all.first(num_full));
  kv.lazy_pages.append(all.subspan(num_full));
}

}  // namespace

KvManager::KvManager(const KvLayout& layout, int32_t num_pages)
    : layout_(layout), page_pool_(num_pages, "page") {
  LS_CHECK(layout.validate().ok()) << layout.validate().message();
}

KvManager::~KvManager() {
  LS_CHECK(live_.empty()) << live_.size() << " KvAllocation(s) outlive their KvManager";
}

std::optional<AdmitPlan> KvManager::plan_admit(Footprint footprint, int64_t token_capacity) const {
  LS_CHECK(layout_.check_footprint(footprint).ok()) << layout_.check_footprint(footprint).message();
  LS_CHECK(token_capacity >= 0) << "token capacity " << token_capacity;
  const std::optional<int32_t> num_pages =
      as_pool_count(layout_.pages_for(token_capacity, footprint), num_total_pages());
  if (!num_pages) return std::nullopt;
  std::optional<IdPlan> pages = page_pool_.plan(*num_pages);
  if (!pages) return std::nullopt;
  return AdmitPlan{footprint, token_capacity, std::move(*pages)};
}

KvAllocation KvManager::commit(AdmitPlan plan) {
  auto kv = std::make_unique<RequestKv>();
  kv->footprint = plan.footprint;
  kv->token_capacity = plan.token_capacity;
  kv->full_pages = PageTable(plan.footprint.full_layers);
  kv->lazy_pages = PageTable(plan.footprint.lazy_layers);
  append_pages(*kv, page_pool_.commit(std::move(plan.pages)),
               layout_.full_lane_pages(plan.token_capacity));
  num_full_lane_pages_ += kv->full_pages.num_pages();
  num_lazy_lane_pages_ += kv->lazy_pages.num_pages();
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
  const int64_t extra = layout_.pages_for(token_capacity, kv.footprint) -
                        layout_.pages_for(kv.token_capacity, kv.footprint);
  const std::optional<int32_t> num_pages = as_pool_count(extra, num_total_pages());
  if (!num_pages) return std::nullopt;
  std::optional<IdPlan> pages = page_pool_.plan(*num_pages);
  if (!pages) return std::nullopt;
  return GrowPlan{allocation.id(), token_capacity, std::move(*pages)};
}

void KvManager::commit(KvAllocation& allocation, GrowPlan plan) {
  LS_CHECK(!allocation.empty() && allocation.manager_ == this &&
           allocation.id() == plan.allocation_id)
      << "grow plan for allocation " << plan.allocation_id << " committed to allocation "
      << allocation.id();
  RequestKv& kv = *allocation.kv_;
  const int64_t full_before = kv.full_pages.num_pages();
  const int64_t lazy_before = kv.lazy_pages.num_pages();
  append_pages(
      kv, page_pool_.commit(std::move(plan.pages)),
      layout_.full_lane_pages(plan.token_capacity) - layout_.full_lane_pages(kv.token_capacity));
  num_full_lane_pages_ += kv.full_pages.num_pages() - full_before;
  num_lazy_lane_pages_ += kv.lazy_pages.num_pages() - lazy_before;
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
  const RequestKv& kv = *allocation.kv_;
  num_full_lane_pages_ -= kv.full_pages.num_pages();
  num_lazy_lane_pages_ -= kv.lazy_pages.num_pages();
  page_pool_.release(kv.full_pages.all_page_ids());
  page_pool_.release(kv.lazy_pages.all_page_ids());
  allocation.kv_.reset();
  allocation.manager_ = nullptr;
  allocation.id_ = 0;
}

bool KvManager::fits_when_empty(Footprint footprint, int64_t token_capacity) const {
  if (!layout_.check_footprint(footprint).ok() || token_capacity < 0) return false;
  return layout_.pages_for(token_capacity, footprint) <= num_total_pages();
}

KvUsage KvManager::usage() const {
  if (num_total_pages() == 0) return {};
  const auto total = static_cast<double>(num_total_pages());
  return {static_cast<double>(num_total_pages() - num_free_pages()) / total,
          static_cast<double>(num_full_lane_pages_) / total,
          static_cast<double>(num_lazy_lane_pages_) / total};
}

void KvManager::check_invariants() const {
  page_pool_.check_invariants();
  std::vector<uint64_t> owner_of(static_cast<size_t>(num_total_pages()), 0);
  int64_t num_owned = 0;
  int64_t num_full = 0;
  int64_t num_lazy = 0;
  for (const auto& [id, kv] : live_) {
    const Footprint footprint = kv->footprint;
    const int64_t capacity = kv->token_capacity;
    // (A table without lanes has no pages per lane.)
    LS_CHECK(kv->full_pages.num_lanes() == footprint.full_layers &&
             (footprint.full_layers == 0 ||
              kv->full_pages.num_pages_per_lane() == layout_.full_lane_pages(capacity)))
        << "allocation " << id << " holds " << kv->full_pages.num_pages() << " full-lane pages for "
        << capacity << " tokens";
    LS_CHECK(kv->lazy_pages.num_lanes() == footprint.lazy_layers &&
             (footprint.lazy_layers == 0 ||
              kv->lazy_pages.num_pages_per_lane() == layout_.lazy_lane_pages(capacity)))
        << "allocation " << id << " holds " << kv->lazy_pages.num_pages() << " lazy-lane pages for "
        << capacity << " tokens";
    LS_CHECK(kv->layer_map.max_full_layers() == footprint.full_layers &&
             kv->layer_map.max_lazy_layers() == footprint.lazy_layers)
        << "allocation " << id << " layer map does not match its footprint";
    kv->layer_map.check_invariants();
    num_full += kv->full_pages.num_pages();
    num_lazy += kv->lazy_pages.num_pages();
    for (const PageTable* table : {&kv->full_pages, &kv->lazy_pages}) {
      for (PageId page : table->all_page_ids()) {
        LS_CHECK(!page_pool_.is_free(page))
            << "page " << page << " of allocation " << id << " is on the free list";
        uint64_t& owner = owner_of[static_cast<size_t>(page)];
        LS_CHECK(owner == 0) << "page " << page << " owned by " << owner << " and " << id;
        owner = id;
        ++num_owned;
      }
    }
  }
  LS_CHECK(num_owned + num_free_pages() == num_total_pages())
      << num_owned << " owned + " << num_free_pages() << " free pages != " << num_total_pages();
  LS_CHECK(num_full == num_full_lane_pages_ && num_lazy == num_lazy_lane_pages_)
      << "full / lazy lane pages counted " << num_full_lane_pages_ << " / " << num_lazy_lane_pages_
      << ", held " << num_full << " / " << num_lazy;
}

}  // namespace lightserve::memory
