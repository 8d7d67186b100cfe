// IdPool: the one id pool of the KV memory (docs/design.md §5, §11 habit 3): KvManager's pages
// (block_size tokens of one layer's K/V), which full and lazy layers both draw from.
//
// Ids [0, n), LIFO: a just-freed id is handed out first, so a hot working set stays small.
// Plan, then commit (habit 2): plan() has no side effects and returns nullopt on a shortage;
// commit() takes exactly the planned ids. A plan is valid until the next commit or release on
// this pool (a version stamp tells). Misuse (stale or altered plan, double release, foreign id)
// fails an LS_CHECK that names the pool's kind. Not thread-safe: owned by the engine thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace lightserve::memory {

using PageId = int32_t;

struct IdPlan {
  std::vector<int32_t> ids;   // what commit() will hand out, in order
  uint64_t pool_version = 0;  // the pool state the plan was made against
};

class IdPool {
 public:
  // `kind` ("page") names the ids in check messages; must outlive the pool.
  IdPool(int32_t num_ids, const char* kind);

  // The ids commit() would hand out; nullopt when fewer than `count` are free. Precondition:
  // count >= 0.
  [[nodiscard]] std::optional<IdPlan> plan(int32_t count) const;
  // Takes exactly the plan's ids, which must be unchanged and made at the current version.
  [[nodiscard]] std::vector<int32_t> commit(IdPlan plan);
  // Returns ids; the first of them is handed out first again. A free or foreign id is misuse.
  void release(std::span<const int32_t> ids);

  int32_t num_total() const { return static_cast<int32_t>(is_free_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_stack_.size()); }
  bool is_free(int32_t id) const;  // precondition: id in [0, num_total())
  // Free stack and free flags agree, no duplicates, ids in range.
  void check_invariants() const;

 private:
  const char* kind_;
  std::vector<int32_t> free_stack_;  // back() is handed out next
  std::vector<bool> is_free_;
  uint64_t version_ = 0;  // bumped by every commit and release
};

}  // namespace lightserve::memory
