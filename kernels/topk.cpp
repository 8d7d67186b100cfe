#include "kernels/topk.h"

#include <algorithm>
#include <limits>
#include <vector>

namespace lightserve::kernels {

void topk_row(const float* row, int64_t width, int32_t k, Ranked* out) {
  if (k <= 0) return;
  const int64_t kept_max = std::min<int64_t>(k, width);
  struct Entry {
    uint32_t key;
    int32_t id;
  };
  // `best` stays sorted in rank order; a value enters only when it ranks before the last kept one,
  // which for a row in no particular order is rare after the first few thousand values.
  std::vector<Entry> best;
  best.reserve(static_cast<size_t>(kept_max) + 1);
  auto before = [](const Entry& a, const Entry& b) {
    return a.key > b.key || (a.key == b.key && a.id < b.id);
  };
  // Once `best` is full and its last is a number, a value below that number (or a NaN, which
  // ranks last away from index 0) cannot enter: one float comparison skips most of a row.
  bool skip_below = false;
  float last_value = 0.0f;
  for (int64_t i = 0; i < width; ++i) {
    if (skip_below && !(row[i] >= last_value)) continue;
    const Entry e{rank_key(row[i], i), static_cast<int32_t>(i)};
    // Indices ascend, so an equal key never ranks before a kept one.
    if (static_cast<int64_t>(best.size()) == kept_max && e.key <= best.back().key) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), e, before), e);
    if (static_cast<int64_t>(best.size()) > kept_max) best.pop_back();
    if (static_cast<int64_t>(best.size()) == kept_max) {
      last_value = row[best.back().id];
      skip_below = last_value == last_value;  // a NaN last (first or last in rank) decides nothing
    }
  }
  for (size_t j = 0; j < best.size(); ++j) out[j] = {best[j].id, row[best[j].id]};
  for (int64_t j = static_cast<int64_t>(best.size()); j < k; ++j) {
    out[j] = {-1, std::numeric_limits<float>::quiet_NaN()};
  }
}

}  // namespace lightserve::kernels
