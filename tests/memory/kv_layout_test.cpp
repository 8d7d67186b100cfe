#include "memory/kv_layout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace lightserve::memory {
namespace {

constexpr int64_t kSmolBytesPerLaneToken = 2 * 3 * 64 * 2;  // K+V, 3 KV heads, head_dim 64, f16

KvLayout layout_for(int32_t num_layers, double lazy_fraction) {
  Result<KvLayout> layout =
      KvLayout::for_lazy_fraction(num_layers, lazy_fraction, 16, 4, 1020, kSmolBytesPerLaneToken);
  EXPECT_TRUE(layout.ok()) << layout.error().message;
  return layout.value();
}

// One row per (L, f): lanes, then blocks and slots for 100 tokens (7 blocks per lane group)
// under the hybrid footprint and the two overrides; -1 where the arena cannot hold it.
struct FootprintCase {
  int32_t num_layers;
  double lazy_fraction;
  int32_t lanes_per_block;
  int32_t lanes_per_slot;
  int64_t hybrid_blocks;
  int32_t hybrid_slots;
  int64_t full_override_blocks;
  int32_t streaming_slots;
};

TEST(KvLayoutTest, FootprintsAcrossLazyFractions) {
  const FootprintCase cases[] = {
      // L = 30
      {30, 0.0, 30, 0, 7, 0, 7, -1},
      {30, 0.25, 22, 8, 7, 1, 14, 4},  // round(7.5) = 8 lazy
      {30, 0.5, 15, 15, 7, 1, 14, 2},
      {30, 0.75, 7, 23, 7, 1, 35, 2},  // round(22.5) = 23 lazy; full override: 5 lane groups
      {30, 1.0, 0, 30, 0, 1, -1, 1},
      // L = 32
      {32, 0.0, 32, 0, 7, 0, 7, -1},
      {32, 0.25, 24, 8, 7, 1, 14, 4},
      {32, 0.5, 16, 16, 7, 1, 14, 2},
      {32, 0.75, 8, 24, 7, 1, 28, 2},
      {32, 1.0, 0, 32, 0, 1, -1, 1},
  };
  for (const FootprintCase& c : cases) {
    SCOPED_TRACE("L=" + std::to_string(c.num_layers) + " f=" + std::to_string(c.lazy_fraction));
    const KvLayout layout = layout_for(c.num_layers, c.lazy_fraction);
    EXPECT_EQ(layout.lanes_per_block, c.lanes_per_block);
    EXPECT_EQ(layout.lanes_per_slot, c.lanes_per_slot);
    const Footprint hybrid = layout.hybrid_footprint();
    ASSERT_TRUE(layout.check_footprint(hybrid).ok());
    EXPECT_EQ(layout.blocks_for(100, hybrid), c.hybrid_blocks);
    EXPECT_EQ(layout.slots_for(hybrid), c.hybrid_slots);
    const Footprint full = layout.full_footprint();
    if (c.full_override_blocks < 0) {
      EXPECT_FALSE(layout.check_footprint(full).ok());
    } else {
      ASSERT_TRUE(layout.check_footprint(full).ok());
      EXPECT_EQ(layout.blocks_for(100, full), c.full_override_blocks);
      EXPECT_EQ(layout.slots_for(full), 0);
    }
    const Footprint streaming = layout.streaming_footprint();
    if (c.streaming_slots < 0) {
      EXPECT_FALSE(layout.check_footprint(streaming).ok());
    } else {
      ASSERT_TRUE(layout.check_footprint(streaming).ok());
      EXPECT_EQ(layout.blocks_for(100, streaming), 0);
      EXPECT_EQ(layout.slots_for(streaming), c.streaming_slots);
    }
  }
}

TEST(KvLayoutTest, HybridNeedsOneSlotWhateverLayersAreLazy) {
  const KvLayout layout = layout_for(30, 0.5);
  EXPECT_EQ(layout.blocks_for(0, layout.hybrid_footprint()), 0);
  EXPECT_EQ(layout.blocks_for(1, layout.hybrid_footprint()), 1);
  EXPECT_EQ(layout.blocks_for(16, layout.hybrid_footprint()), 1);
  EXPECT_EQ(layout.blocks_for(17, layout.hybrid_footprint()), 2);
  EXPECT_EQ(layout.blocks_for(16384, layout.hybrid_footprint()), 1024);
  EXPECT_EQ(layout.slots_for(layout.hybrid_footprint()), 1);
}

TEST(KvLayoutTest, BytesOfBlocksAndSlots) {
  const KvLayout layout = layout_for(30, 0.5);
  EXPECT_EQ(layout.block_bytes(), 16 * 15 * kSmolBytesPerLaneToken);   // 180 KiB
  EXPECT_EQ(layout.slot_bytes(), 1024 * 15 * kSmolBytesPerLaneToken);  // 11.25 MiB
  EXPECT_EQ(layout_for(30, 0.0).slot_bytes(), 0);
  EXPECT_EQ(layout_for(30, 1.0).block_bytes(), 0);
}

TEST(KvLayoutTest, HybridAt16KTokensIsAbout053OfFull) {
  for (int32_t num_layers : {30, 32}) {
    const KvLayout layout = layout_for(num_layers, 0.5);
    const double ratio = static_cast<double>(layout.bytes_for(16384, layout.hybrid_footprint())) /
                         static_cast<double>(layout.full_attention_bytes_for(16384));
    EXPECT_NEAR(ratio, 0.53, 0.005) << num_layers << " layers";
    // f = 0: the hybrid is plain full attention.
    const KvLayout full_layout = layout_for(num_layers, 0.0);
    EXPECT_EQ(full_layout.bytes_for(16384, full_layout.hybrid_footprint()),
              full_layout.full_attention_bytes_for(16384));
  }
}

TEST(KvLayoutTest, LanePlaces) {
  const KvLayout layout = layout_for(30, 0.5);
  EXPECT_EQ(layout.place_full_lane(0).container, 0);
  EXPECT_EQ(layout.place_full_lane(17).container, 1);
  EXPECT_EQ(layout.place_full_lane(17).lane, 2);
  EXPECT_EQ(layout.place_lazy_lane(29).container, 1);
  EXPECT_EQ(layout.place_lazy_lane(29).lane, 14);
}

void expect_error_naming(Result<KvLayout> layout, const std::string& setting) {
  ASSERT_FALSE(layout.ok()) << setting;
  EXPECT_NE(layout.error().message.find(setting), std::string::npos) << layout.error().message;
}

TEST(KvLayoutTest, ValidationNamesTheSetting) {
  expect_error_naming(KvLayout::for_lazy_fraction(30, 1.5, 16, 4, 1020, 768), "lazy_fraction");
  expect_error_naming(KvLayout::for_lazy_fraction(30, -0.1, 16, 4, 1020, 768), "lazy_fraction");
  expect_error_naming(KvLayout::for_lazy_fraction(30, std::nan(""), 16, 4, 1020, 768),
                      "lazy_fraction");
  expect_error_naming(KvLayout::for_lazy_fraction(0, 0.5, 16, 4, 1020, 768), "num_layers");
  expect_error_naming(KvLayout::for_lazy_fraction(30, 0.5, 24, 4, 1020, 768), "block_size");
  expect_error_naming(KvLayout::for_lazy_fraction(30, 0.5, 512, 4, 1020, 768), "block_size");
  expect_error_naming(KvLayout::for_lazy_fraction(30, 0.5, 0, 4, 1020, 768), "block_size");
  expect_error_naming(KvLayout::for_lazy_fraction(30, 0.5, 16, -1, 1020, 768), "sink");
  expect_error_naming(KvLayout::for_lazy_fraction(30, 0.5, 16, 4, 0, 768), "window");
  expect_error_naming(KvLayout::for_lazy_fraction(30, 0.5, 16, 4, 1020, 0), "bytes_per_lane_token");
  EXPECT_TRUE(KvLayout::for_lazy_fraction(30, 0.5, 256, 0, 1, 1).ok());
  EXPECT_TRUE(KvLayout::for_lazy_fraction(1, 0.5, 1, 0, 1, 1).ok());
}

TEST(KvLayoutTest, FootprintThatDoesNotCoverTheModelIsRejected) {
  const KvLayout layout = layout_for(30, 0.5);
  EXPECT_FALSE(layout.check_footprint({15, 14}).ok());
  EXPECT_FALSE(layout.check_footprint({-1, 31}).ok());
  EXPECT_TRUE(layout.check_footprint({20, 10}).ok());
  EXPECT_EQ(layout.blocks_for(32, {20, 10}), 2 * 2);  // 20 full layers need 2 lane groups
  EXPECT_EQ(layout.slots_for({20, 10}), 1);
}

}  // namespace
}  // namespace lightserve::memory
