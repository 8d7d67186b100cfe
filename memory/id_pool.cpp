#include "memory/id_pool.h"

#include <utility>

#include "base/check.h"

namespace lightserve::memory {

IdPool::IdPool(int32_t num_ids, const char* kind)
    : kind_(kind), is_free_(static_cast<size_t>(num_ids), true) {
  LS_CHECK(num_ids >= 0) << num_ids << " " << kind_ << "s";
  free_stack_.reserve(static_cast<size_t>(num_ids));
  for (int32_t id = num_ids - 1; id >= 0; --id) free_stack_.push_back(id);  // 0 is taken first
}

bool IdPool::is_free(int32_t id) const {
  LS_CHECK(id >= 0 && id < num_total())
      << kind_ << " " << id << " is not in [0, " << num_total() << ")";
  return is_free_[static_cast<size_t>(id)];
}

std::optional<IdPlan> IdPool::plan(int32_t count) const {
  LS_CHECK(count >= 0) << "asked for " << count << " " << kind_ << "s";
  if (count > num_free()) return std::nullopt;
  return IdPlan{std::vector<int32_t>(free_stack_.rbegin(), free_stack_.rbegin() + count), version_};
}

std::vector<int32_t> IdPool::commit(IdPlan plan) {
  LS_CHECK(plan.pool_version == version_)
      << "stale " << kind_ << " plan (made at version " << plan.pool_version << ", pool now at "
      << version_ << ")";
  LS_CHECK(plan.ids.size() <= free_stack_.size()) << "plan takes more " << kind_ << "s than free";
  for (int32_t id : plan.ids) {
    LS_CHECK(free_stack_.back() == id)
        << "altered " << kind_ << " plan: " << id << " is not next on the free list";
    free_stack_.pop_back();
    is_free_[static_cast<size_t>(id)] = false;
  }
  ++version_;
  return std::move(plan.ids);
}

void IdPool::release(std::span<const int32_t> ids) {
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    const int32_t id = *it;
    LS_CHECK(!is_free(id)) << kind_ << " " << id << " released twice";
    is_free_[static_cast<size_t>(id)] = true;
    free_stack_.push_back(id);
  }
  ++version_;
}

void IdPool::check_invariants() const {
  std::vector<bool> on_stack(is_free_.size(), false);
  for (int32_t id : free_stack_) {
    LS_CHECK(id >= 0 && id < num_total()) << kind_ << " " << id << " out of range";
    LS_CHECK(!on_stack[static_cast<size_t>(id)]) << kind_ << " " << id << " free twice";
    LS_CHECK(is_free_[static_cast<size_t>(id)])
        << kind_ << " " << id << " on the free list but marked used";
    on_stack[static_cast<size_t>(id)] = true;
  }
  LS_CHECK(on_stack == is_free_) << "a " << kind_ << " is marked free but not on the list";
}

}  // namespace lightserve::memory
