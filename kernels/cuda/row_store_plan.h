// Which queued K/V stores can join a deferred rope in one kernel (CudaBackend::issue_rope,
// elementwise.h's launch_rope_then_store), as a pure host function. Free of CUDA headers, so the
// CPU tests check it (tests/kernels/row_store_plan_test.cpp). Not a public header.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace lightserve::kernels::cuda {

// A queued store_kv call (CudaBackend queues stores of at most a few rows and issues them as one
// launch).
struct QueuedStore {
  const float* src;
  int64_t src_stride;
  uint16_t* dst;
  int64_t dst_stride;
  int64_t rows;
  int32_t bf16;  // the cache type is bf16 (else f16)
};

// One KV row to store after the rope: `width` values of rope row `row` (implicit: the plan groups
// stores by row), from element `col`.
struct RowStore {
  uint16_t* dst;
  int64_t col;
  int32_t bf16;
  int32_t unused;
};

// The stores grouped by rope row: stores[row_begin[r] .. row_begin[r + 1]) read row r.
struct RowStorePlan {
  std::vector<RowStore> stores;
  std::vector<int32_t> row_begin;  // n + 1 offsets
  std::vector<std::pair<int64_t, RowStore>> scratch;
};

// Maps every row of every queued store (all `width` values wide) to (rope row, column) for a
// rope over n rows of row_stride floats at x. False, with the plan unspecified, when some store
// row is not wholly inside one rope row or some destination overlaps the rope's rows: the stores
// must then run after the rope, as issued. Only addresses are compared; nothing is read.
inline bool plan_row_stores(const float* x, int64_t n, int64_t row_stride,
                            std::span<const QueuedStore> queued, int64_t width,
                            RowStorePlan& plan) {
  if (n <= 0 || row_stride <= 0 || width <= 0) return false;
  const auto base = reinterpret_cast<uintptr_t>(x);
  const uintptr_t row_bytes = static_cast<uintptr_t>(row_stride) * sizeof(float);
  const uintptr_t end = base + static_cast<uintptr_t>(n) * row_bytes;
  const uintptr_t width_bytes = static_cast<uintptr_t>(width) * sizeof(float);
  auto& rows = plan.scratch;
  rows.clear();
  for (const QueuedStore& s : queued) {
    for (int64_t i = 0; i < s.rows; ++i) {
      const uintptr_t src = reinterpret_cast<uintptr_t>(s.src) +
                            static_cast<uintptr_t>(i * s.src_stride) * sizeof(float);
      if (src < base || src >= end || (src - base) % sizeof(float) != 0) return false;
      const uintptr_t row = (src - base) / row_bytes, col_bytes = (src - base) % row_bytes;
      if (col_bytes + width_bytes > row_bytes) return false;
      uint16_t* dst = s.dst + i * s.dst_stride;
      const auto dst_begin = reinterpret_cast<uintptr_t>(dst);
      const uintptr_t dst_end = dst_begin + static_cast<uintptr_t>(width) * sizeof(uint16_t);
      if (dst_begin < end && dst_end > base) return false;
      rows.push_back({static_cast<int64_t>(row),
                      RowStore{dst, static_cast<int64_t>(col_bytes / sizeof(float)), s.bf16, 0}});
    }
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  plan.stores.clear();
  plan.row_begin.assign(static_cast<size_t>(n) + 1, 0);
  for (const auto& [row, store] : rows) {
    plan.stores.push_back(store);
    ++plan.row_begin[static_cast<size_t>(row) + 1];
  }
  for (size_t r = 1; r < plan.row_begin.size(); ++r) plan.row_begin[r] += plan.row_begin[r - 1];
  return true;
}

}  // namespace lightserve::kernels::cuda
