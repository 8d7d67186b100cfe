// Random operations against KvManager (admit, grow, prefill decisions and demotions in the layer
// maps, release), checked after every step against a plain model of the free count and against
// the union of the live handles' pages (independent of the manager's own audit): no leak, no
// page owned twice, lazy lanes never above ceil((sink + window) / page) pages, full-length lanes
// within the footprint, and all memory back at the end.
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
  // L = 6 keeps the layer maps small; tiny pages make shortages common; sink 2 + window 7 = 9
  // ring rows over 3 pages of 4 (the last one partly used).
  const KvLayout layout = KvLayout::for_lazy_fraction(6, GetParam(), 4, 2, 7, 8).value();
  constexpr int32_t kNumPages = 160;
  KvManager manager(layout, kNumPages);
  const int64_t max_lazy_lane_pages = ceil_div(layout.ring_tokens(), layout.block_size);

  // Every split of the layers draws from the one pool.
  std::vector<Footprint> footprints = {layout.hybrid_footprint(), layout.full_footprint(),
                                       layout.streaming_footprint(), Footprint{1, 5}};

  std::mt19937 random(1234);
  auto uniform = [&](int64_t low, int64_t high) {
    return std::uniform_int_distribution<int64_t>(low, high)(random);
  };
  int64_t model_free_pages = kNumPages;
  std::vector<Live> live;
  int num_admitted = 0;
  int num_refused = 0;
  int num_grown = 0;
  int num_demoted = 0;

  auto check_everything = [&] {
    manager.check_invariants();
    ASSERT_EQ(manager.num_free_pages(), model_free_pages);
    ASSERT_EQ(manager.num_live_allocations(), static_cast<int32_t>(live.size()));
    std::set<PageId> pages;
    int64_t full_lane_pages = 0, lazy_lane_pages = 0;
    for (const Live& entry : live) {
      const KvAllocation& a = entry.allocation;
      for (const PageTable* table : {&a.full_pages(), &a.lazy_pages()}) {
        for (PageId page : table->all_page_ids()) {
          ASSERT_TRUE(pages.insert(page).second) << "page " << page << " owned twice";
        }
      }
      full_lane_pages += a.full_pages().num_pages();
      lazy_lane_pages += a.lazy_pages().num_pages();
      // A lazy layer never holds more than its sinks and window need.
      ASSERT_LE(a.lazy_pages().num_pages_per_lane(), max_lazy_lane_pages);
      if (a.footprint().lazy_layers > 0) {
        ASSERT_EQ(a.lazy_pages().num_pages_per_lane(), layout.lazy_lane_pages(a.token_capacity()));
      }
      // Full-length layers in the arena: at most the footprint's full lanes (P for a hybrid
      // request); the layer being decided during prefill is the model's scratch, the "+1".
      ASSERT_LE(a.layer_map().num_full_layers(), a.footprint().full_layers);
      ASSERT_EQ(a.full_pages().num_lanes(), a.footprint().full_layers);
      ASSERT_EQ(a.num_pages(), layout.pages_for(a.token_capacity(), a.footprint()));
    }
    ASSERT_EQ(static_cast<int64_t>(pages.size()) + model_free_pages, kNumPages);  // no leak
    ASSERT_EQ(manager.num_full_lane_pages(), full_lane_pages);
    ASSERT_EQ(manager.num_lazy_lane_pages(), lazy_lane_pages);
  };

  for (int step = 0; step < 5000; ++step) {
    const int64_t op = uniform(0, 9);
    if (op <= 3 || live.empty()) {  // admit, sometimes abandoning the plan
      const Footprint footprint =
          footprints[static_cast<size_t>(uniform(0, footprints.size() - 1))];
      const int64_t tokens = uniform(0, 60);
      const int64_t need = layout.pages_for(tokens, footprint);
      std::optional<AdmitPlan> plan = manager.plan_admit(footprint, tokens);
      ASSERT_EQ(plan.has_value(), need <= model_free_pages);
      if (!plan) {
        ++num_refused;
      } else if (uniform(0, 4) > 0) {
        live.push_back({manager.commit(std::move(*plan))});
        model_free_pages -= need;
        ++num_admitted;
      }
    } else if (op <= 6) {  // grow a random request
      Live& entry = live[static_cast<size_t>(uniform(0, live.size() - 1))];
      const int64_t old_capacity = entry.allocation.token_capacity();
      const int64_t new_capacity = old_capacity + uniform(0, 12);
      const Footprint footprint = entry.allocation.footprint();
      const int64_t extra =
          layout.pages_for(new_capacity, footprint) - layout.pages_for(old_capacity, footprint);
      std::optional<GrowPlan> plan = manager.plan_grow(entry.allocation, new_capacity);
      ASSERT_EQ(plan.has_value(), extra <= model_free_pages);
      if (plan && uniform(0, 4) > 0) {
        manager.commit(entry.allocation, std::move(*plan));
        model_free_pages -= extra;
        ++num_grown;
      }
    } else if (op == 7) {  // one prefill decision in a random request's layer map
      // As the max-heap decides: the arriving layer takes a free full lane, or goes lazy, or (when
      // the full lanes are all taken) replaces a full layer that is demoted to a lazy lane at once.
      LayerMap& map = live[static_cast<size_t>(uniform(0, live.size() - 1))].allocation.layer_map();
      int32_t layer = 0;
      while (layer < map.num_layers() && map.kind_of(layer) != LayerKind::kUnassigned) ++layer;
      if (layer == map.num_layers()) continue;  // prefill done
      const int64_t choice = uniform(0, 2);
      if (map.num_free_full_lanes() > 0 && choice > 0) {
        map.assign_full(layer);
      } else if (map.num_free_lazy_lanes() > 0 && map.num_full_layers() > 0 && choice == 0) {
        int32_t victim = 0;
        while (!map.is_full(victim)) ++victim;
        map.make_lazy(victim);  // demoted: its full lane goes to the arriving layer
        map.assign_full(layer);
        ++num_demoted;
      } else if (map.num_free_lazy_lanes() > 0) {
        map.assign_lazy(layer);
      } else {
        map.assign_full(layer);
      }
      // Full-length layers of this request: its full lanes plus the layer being decided (the
      // model's prefill scratch), at most P + 1.
      ASSERT_LE(map.num_full_layers() + 1, map.max_full_layers() + 1);
    } else {  // finish or abort: release, destroy, or overwrite by a move
      const size_t index = static_cast<size_t>(uniform(0, live.size() - 1));
      model_free_pages += live[index].allocation.num_pages();
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
  if (layout.full_layers > 0 && layout.lazy_layers > 0) {
    EXPECT_GT(num_demoted, 10);
  }

  live.clear();
  EXPECT_EQ(manager.num_free_pages(), kNumPages);
  EXPECT_EQ(manager.num_live_allocations(), 0);
  manager.check_invariants();
}

INSTANTIATE_TEST_SUITE_P(LazyFractions, KvManagerPropertyTest,
                         ::testing::Values(0.0, 0.5, 1.0 / 3.0, 1.0));

}  // namespace
}  // namespace lightserve::memory
