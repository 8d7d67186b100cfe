// Random operations against KvManager, checked after every step against a plain model of the
// free counts and against the union of the live handles' ids (independent of the manager's own
// audit): no leak, no double use, and all memory back at the end.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <utility>
#include <vector>

#include "memory/kv_manager.h"

namespace lightserve::memory {
namespace {

struct Live {
  KvAllocation allocation;
};

class KvManagerPropertyTest : public ::testing::TestWithParam<double> {};

TEST_P(KvManagerPropertyTest, RandomOperationsKeepTheBooks) {
  // L = 6 keeps the layer maps small; tiny blocks and slots make shortages common.
  const KvLayout layout = KvLayout::for_lazy_fraction(6, GetParam(), 4, 2, 6, 8).value();
  constexpr int32_t kNumBlocks = 48;
  const int32_t num_slots = layout.lanes_per_slot > 0 ? 6 : 0;
  KvManager manager(layout, kNumBlocks, num_slots);

  std::vector<Footprint> footprints = {layout.hybrid_footprint()};
  for (Footprint footprint :
       {layout.full_footprint(), layout.streaming_footprint(),
        Footprint{layout.lanes_per_block > 0 ? 1 : 0, layout.lanes_per_block > 0 ? 5 : 6}}) {
    if (layout.check_footprint(footprint).ok()) footprints.push_back(footprint);
  }

  std::mt19937 random(1234);
  auto uniform = [&](int64_t low, int64_t high) {
    return std::uniform_int_distribution<int64_t>(low, high)(random);
  };
  int64_t model_free_blocks = kNumBlocks;
  int64_t model_free_slots = num_slots;
  std::vector<Live> live;
  int num_admitted = 0;
  int num_refused = 0;
  int num_grown = 0;

  auto check_everything = [&] {
    manager.check_invariants();
    ASSERT_EQ(manager.num_free_blocks(), model_free_blocks);
    ASSERT_EQ(manager.num_free_slots(), model_free_slots);
    ASSERT_EQ(manager.num_live_allocations(), static_cast<int32_t>(live.size()));
    std::set<BlockId> blocks;
    std::set<SlotId> slots;
    for (const Live& entry : live) {
      for (BlockId block : entry.allocation.block_table().all_block_ids()) {
        ASSERT_TRUE(blocks.insert(block).second) << "block " << block << " used twice";
      }
      for (SlotId slot : entry.allocation.slot_ids()) {
        ASSERT_TRUE(slots.insert(slot).second) << "slot " << slot << " used twice";
      }
    }
    ASSERT_EQ(static_cast<int64_t>(blocks.size()) + model_free_blocks, kNumBlocks);
    ASSERT_EQ(static_cast<int64_t>(slots.size()) + model_free_slots, num_slots);
  };

  for (int step = 0; step < 5000; ++step) {
    const int64_t op = uniform(0, 9);
    if (op <= 3 || live.empty()) {  // admit, sometimes abandoning the plan
      const Footprint footprint =
          footprints[static_cast<size_t>(uniform(0, footprints.size() - 1))];
      const int64_t tokens = uniform(0, 60);
      const int64_t need_blocks = layout.blocks_for(tokens, footprint);
      const int64_t need_slots = layout.slots_for(footprint);
      std::optional<AdmitPlan> plan = manager.plan_admit(footprint, tokens);
      ASSERT_EQ(plan.has_value(),
                need_blocks <= model_free_blocks && need_slots <= model_free_slots);
      if (!plan) {
        ++num_refused;
      } else if (uniform(0, 4) > 0) {
        live.push_back({manager.commit(std::move(*plan))});
        model_free_blocks -= need_blocks;
        model_free_slots -= need_slots;
        ++num_admitted;
      }
    } else if (op <= 6) {  // grow a random request
      Live& entry = live[static_cast<size_t>(uniform(0, live.size() - 1))];
      const int64_t old_capacity = entry.allocation.token_capacity();
      const int64_t new_capacity = old_capacity + uniform(0, 12);
      const Footprint footprint = entry.allocation.footprint();
      const int64_t extra =
          layout.blocks_for(new_capacity, footprint) - layout.blocks_for(old_capacity, footprint);
      std::optional<GrowPlan> plan = manager.plan_grow(entry.allocation, new_capacity);
      ASSERT_EQ(plan.has_value(), extra <= model_free_blocks);
      if (plan && uniform(0, 4) > 0) {
        manager.commit(entry.allocation, std::move(*plan));
        model_free_blocks -= extra;
        ++num_grown;
      }
    } else if (op == 7) {  // one prefill decision in a random request's layer map
      LayerMap& map = live[static_cast<size_t>(uniform(0, live.size() - 1))].allocation.layer_map();
      int32_t layer = 0;
      while (layer < map.num_layers() && map.kind_of(layer) != LayerKind::kUnassigned) ++layer;
      if (layer < map.num_layers() && map.num_free_full_lanes() > 0 && uniform(0, 1) == 0) {
        map.assign_full(layer);
      } else if (layer < map.num_layers() && map.num_free_lazy_lanes() > 0) {
        map.assign_lazy(layer);
      } else {
        for (int32_t full = 0; full < map.num_layers(); ++full) {
          if (map.is_full(full) && map.num_free_lazy_lanes() > 0) {
            map.make_lazy(full);
            break;
          }
        }
      }
    } else {  // finish or abort: release, destroy, or overwrite by a move
      const size_t index = static_cast<size_t>(uniform(0, live.size() - 1));
      const Footprint footprint = live[index].allocation.footprint();
      model_free_blocks += layout.blocks_for(live[index].allocation.token_capacity(), footprint);
      model_free_slots += layout.slots_for(footprint);
      const int64_t how = uniform(0, 2);
      if (how == 0) {
        manager.release(std::move(live[index].allocation));
      } else if (how == 1) {
        live[index].allocation = KvAllocation();  // move-assigning over a handle returns it
      }
      // how == 2: the handle's destructor returns it in pop_back below.
      std::swap(live[index], live.back());
      live.pop_back();
    }
    check_everything();
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(num_admitted, 100);
  EXPECT_GT(num_refused, 10);
  EXPECT_GT(num_grown, 100);

  live.clear();
  EXPECT_EQ(manager.num_free_blocks(), kNumBlocks);
  EXPECT_EQ(manager.num_free_slots(), num_slots);
  EXPECT_EQ(manager.num_live_allocations(), 0);
  manager.check_invariants();
}

INSTANTIATE_TEST_SUITE_P(LazyFractions, KvManagerPropertyTest,
                         ::testing::Values(0.0, 0.5, 1.0 / 3.0, 1.0));

}  // namespace
}  // namespace lightserve::memory
