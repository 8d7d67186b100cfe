#include "memory/layer_map.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

namespace lightserve::memory {
namespace {

// Test-time selection as docs/design.md §4 describes it, against a LayerMap with P full lanes:
// after layer i, it keeps full attention if it is among the P least lazy so far; the laziest full
// layer is demoted when the full lanes overflow. Returns the number of full lanes seen in use at
// most.
int32_t select_layers(LayerMap& map, const std::vector<double>& lazy_ratio) {
  int32_t max_full_in_use = 0;
  for (int32_t layer = 0; layer < map.num_layers(); ++layer) {
    if (map.num_free_full_lanes() > 0) {
      map.assign_full(layer);
    } else {
      int32_t laziest_full = -1;
      for (int32_t other = 0; other < layer; ++other) {
        if (map.is_full(other) &&
            (laziest_full < 0 || lazy_ratio[other] > lazy_ratio[laziest_full])) {
          laziest_full = other;
        }
      }
      if (laziest_full < 0 || lazy_ratio[layer] >= lazy_ratio[laziest_full]) {
        map.assign_lazy(layer);
      } else {
        const int32_t freed_lane = map.lane_of(laziest_full);
        map.make_lazy(laziest_full);
        EXPECT_EQ(map.assign_full(layer), freed_lane) << "the freed full lane is reused";
      }
    }
    map.check_invariants();
    max_full_in_use = std::max(max_full_in_use, map.num_full_layers());
  }
  return max_full_in_use;
}

TEST(LayerMapTest, IncrementalSelectionKeepsTheGlobalTopK) {
  std::mt19937 random(7);
  for (int32_t num_layers : {30, 32}) {
    for (int32_t num_full : {0, 1, num_layers / 4, num_layers / 2, num_layers - 1, num_layers}) {
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<double> lazy_ratio(static_cast<size_t>(num_layers));
        for (double& ratio : lazy_ratio) ratio = std::uniform_real_distribution<>(0, 1)(random);
        LayerMap map(num_layers, num_full, num_layers - num_full);
        EXPECT_LE(select_layers(map, lazy_ratio), num_full);
        EXPECT_TRUE(map.complete());
        EXPECT_EQ(map.num_full_layers(), num_full);
        EXPECT_EQ(map.num_lazy_layers(), num_layers - num_full);
        // Full layers are exactly the num_full least lazy ones.
        std::vector<int32_t> order(static_cast<size_t>(num_layers));
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(),
                  [&](int32_t a, int32_t b) { return lazy_ratio[a] < lazy_ratio[b]; });
        for (int32_t rank = 0; rank < num_layers; ++rank) {
          EXPECT_EQ(map.is_full(order[rank]), rank < num_full) << "layer " << order[rank];
        }
      }
    }
  }
}

TEST(LayerMapTest, LanesRoundTrip) {
  LayerMap map(4, 2, 2);
  EXPECT_EQ(map.num_unassigned_layers(), 4);
  EXPECT_EQ(map.assign_full(2), 0);
  EXPECT_EQ(map.assign_lazy(0), 0);
  EXPECT_EQ(map.assign_full(3), 1);
  EXPECT_EQ(map.kind_of(1), LayerKind::kUnassigned);
  EXPECT_EQ(map.layer_in_full_lane(0), 2);
  EXPECT_EQ(map.layer_in_full_lane(1), 3);
  EXPECT_EQ(map.layer_in_lazy_lane(0), 0);
  EXPECT_EQ(map.layer_in_lazy_lane(1), -1);
  EXPECT_EQ(map.make_lazy(2), 1);
  EXPECT_TRUE(map.is_lazy(2));
  EXPECT_EQ(map.lane_of(2), 1);
  EXPECT_EQ(map.layer_in_full_lane(0), -1);
  EXPECT_EQ(map.assign_full(1), 0);  // lane 0, freed by layer 2, comes back first
  EXPECT_TRUE(map.complete());
  EXPECT_EQ(map.num_free_full_lanes(), 0);
  EXPECT_EQ(map.num_free_lazy_lanes(), 0);
  map.check_invariants();
}

using LayerMapDeathTest = ::testing::Test;

TEST_F(LayerMapDeathTest, MisuseAborts) {
  LayerMap map(3, 1, 2);
  map.assign_full(0);
  EXPECT_DEATH(map.assign_full(0), "assigned twice");
  EXPECT_DEATH(map.assign_full(1), "all 1 full lanes are taken");
  EXPECT_DEATH(map.make_lazy(1), "layer 1 is not full");
  EXPECT_DEATH((void)map.lane_of(2), "has no lane yet");
  EXPECT_DEATH((void)map.kind_of(3), "layer 3 not in");
  map.assign_lazy(1);
  map.assign_lazy(2);
  EXPECT_DEATH(map.make_lazy(0), "all 2 lazy lanes are taken");
}

}  // namespace
}  // namespace lightserve::memory
