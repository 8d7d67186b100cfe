// The free list shared by BlockPool and SlotPool: ids [0, n), LIFO (a just-freed id is handed out
// first, so a hot working set stays small), plan-then-commit with a version stamp.
//
// Not thread-safe: owned by the engine thread (docs/design.md §1).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace lightserve::memory {

class IdFreeList {
 public:
  // `id_kind` ("block", "slot") names the ids in check messages; must outlive the list.
  IdFreeList(int32_t num_ids, const char* id_kind);

  int32_t num_total() const { return static_cast<int32_t>(is_free_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_stack_.size()); }
  bool is_free(int32_t id) const;  // precondition: id in [0, num_total())

  // Bumped by every take and give_back: a plan made at an older version is stale.
  uint64_t version() const { return version_; }

  // The ids take() would hand out, in order; nullopt when fewer than `count` are free.
  // No side effects. Precondition: count >= 0.
  std::optional<std::vector<int32_t>> peek(int32_t count) const;

  // Takes exactly `ids` as returned by peek() at `version`. A stale or altered plan is misuse.
  void take(std::span<const int32_t> ids, uint64_t version);

  // Returns ids; the first of them is handed out first again. A free or foreign id is misuse.
  void give_back(std::span<const int32_t> ids);

  // Free stack and free flags agree, no duplicates, ids in range.
  void check_invariants() const;

 private:
  const char* id_kind_;
  std::vector<int32_t> free_stack_;  // back() is handed out next
  std::vector<bool> is_free_;
  uint64_t version_ = 0;
};

}  // namespace lightserve::memory
