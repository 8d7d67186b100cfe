#include "memory/id_free_list.h"

#include "base/check.h"

namespace lightserve::memory {

IdFreeList::IdFreeList(int32_t num_ids, const char* id_kind)
    : id_kind_(id_kind), is_free_(static_cast<size_t>(num_ids), true) {
  LS_CHECK(num_ids >= 0) << num_ids << " " << id_kind_ << "s";
  free_stack_.reserve(static_cast<size_t>(num_ids));
  for (int32_t id = num_ids - 1; id >= 0; --id) free_stack_.push_back(id);  // 0 is taken first
}

bool IdFreeList::is_free(int32_t id) const {
  LS_CHECK(id >= 0 && id < num_total())
      << id_kind_ << " " << id << " is not in [0, " << num_total() << ")";
  return is_free_[static_cast<size_t>(id)];
}

std::optional<std::vector<int32_t>> IdFreeList::peek(int32_t count) const {
  LS_CHECK(count >= 0) << "asked for " << count << " " << id_kind_ << "s";
  if (count > num_free()) return std::nullopt;
  return std::vector<int32_t>(free_stack_.rbegin(), free_stack_.rbegin() + count);
}

void IdFreeList::take(std::span<const int32_t> ids, uint64_t version) {
  LS_CHECK(version == version_) << "stale " << id_kind_ << " plan (made at version " << version
                                << ", pool now at " << version_ << ")";
  LS_CHECK(ids.size() <= free_stack_.size()) << "plan takes more " << id_kind_ << "s than free";
  for (int32_t id : ids) {
    LS_CHECK(free_stack_.back() == id)
        << "altered " << id_kind_ << " plan: " << id << " is not next on the free list";
    free_stack_.pop_back();
    is_free_[static_cast<size_t>(id)] = false;
  }
  ++version_;
}

void IdFreeList::give_back(std::span<const int32_t> ids) {
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    const int32_t id = *it;
    LS_CHECK(!is_free(id)) << id_kind_ << " " << id << " released twice";
    is_free_[static_cast<size_t>(id)] = true;
    free_stack_.push_back(id);
  }
  ++version_;
}

void IdFreeList::check_invariants() const {
  std::vector<bool> on_stack(is_free_.size(), false);
  for (int32_t id : free_stack_) {
    LS_CHECK(id >= 0 && id < num_total()) << id_kind_ << " " << id << " out of range";
    LS_CHECK(!on_stack[static_cast<size_t>(id)]) << id_kind_ << " " << id << " free twice";
    LS_CHECK(is_free_[static_cast<size_t>(id)])
        << id_kind_ << " " << id << " on the free list but marked used";
    on_stack[static_cast<size_t>(id)] = true;
  }
  LS_CHECK(on_stack == is_free_) << "a " << id_kind_ << " is marked free but not on the list";
}

}  // namespace lightserve::memory
