// KvLayout's row arithmetic and KvAllocation::full_row / lazy_row: every (token, lane) of every
// live request lands on its own arena row, inside the arena, full and lazy lanes alike in the one
// page pool, and a lazy lane keeps its sinks and a ring of the last `window` tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "memory/kv_manager.h"

namespace lightserve::memory {
namespace {

KvLayout layout() {
  KvLayout l;
  l.num_layers = 6;
  l.block_size = 4;
  l.full_layers = 4;
  l.lazy_layers = 2;
  l.sink = 2;
  l.window = 5;
  l.bytes_per_lane_token = 8;
  return l;
}

TEST(KvRows, RingKeepsTheSinksAndTheLastWindowTokens) {
  const KvLayout l = layout();
  for (int64_t t = 0; t < l.sink; ++t) EXPECT_EQ(l.ring_row(t), t);
  for (int64_t t = l.sink; t < 200; ++t) {
    EXPECT_GE(l.ring_row(t), l.sink);
    EXPECT_LT(l.ring_row(t), l.ring_tokens());
    EXPECT_EQ(l.ring_row(t), l.ring_row(t + l.window)) << t;  // overwritten a window later
  }
  for (int64_t end = l.sink + l.window; end < 60; ++end) {  // the last W tokens: distinct rows
    std::set<int32_t> rows;
    for (int64_t t = end - l.window; t < end; ++t) rows.insert(l.ring_row(t));
    EXPECT_EQ(rows.size(), static_cast<size_t>(l.window));
    EXPECT_FALSE(rows.count(0) || rows.count(1));  // never a sink's row
  }
}

TEST(KvRows, EveryLiveTokenOfEveryLaneHasItsOwnRow) {
  const KvLayout l = layout();
  const int32_t num_pages = 200;
  KvManager manager(l, num_pages);
  std::vector<KvAllocation> live;
  const Footprint footprints[] = {l.hybrid_footprint(), {6, 0}, {0, 6}, l.hybrid_footprint()};
  const int64_t lengths[] = {9, 7, 13, 4};
  std::set<int64_t> rows;
  for (int i = 0; i < 4; ++i) {
    auto plan = manager.plan_admit(footprints[i], lengths[i]);
    ASSERT_TRUE(plan) << i;
    live.push_back(manager.commit(std::move(*plan)));
    const KvAllocation& a = live.back();
    for (int32_t lane = 0; lane < footprints[i].full_layers; ++lane) {
      for (int64_t t = 0; t < lengths[i]; ++t) {
        const int64_t row = a.full_row(l, lane, t);
        EXPECT_GE(row, 0);
        EXPECT_LT(row, int64_t{num_pages} * l.block_size);
        EXPECT_TRUE(rows.insert(row).second) << "request " << i << " full lane " << lane;
      }
    }
    // The ring's rows, once each: tokens [0, min(T, sink + window)) are exactly its rows.
    const int64_t ring = std::min<int64_t>(lengths[i], l.ring_tokens());
    for (int32_t lane = 0; lane < footprints[i].lazy_layers; ++lane) {
      for (int64_t t = 0; t < ring; ++t) {
        const int64_t row = a.lazy_row(l, lane, t);
        EXPECT_GE(row, 0);
        EXPECT_LT(row, int64_t{num_pages} * l.block_size);
        EXPECT_TRUE(rows.insert(row).second) << "request " << i << " lazy lane " << lane;
      }
      if (lengths[i] < l.ring_tokens()) continue;  // the ring's pages are not all there yet
      for (int64_t t = ring; t < 40; ++t) {        // later tokens reuse the window's rows
        EXPECT_EQ(a.lazy_row(l, lane, t), a.lazy_row(l, lane, l.sink + (t - l.sink) % l.window));
      }
    }
  }
}

}  // namespace
}  // namespace lightserve::memory
