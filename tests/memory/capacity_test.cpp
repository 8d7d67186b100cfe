#include "memory/capacity.h"

#include <gtest/gtest.h>

#include <string>

namespace lightserve::memory {
namespace {

// L = 4, f = 0.5 (2 full + 2 lazy lanes), block_size 4, sink 1 + window 3, 10 bytes per lane
// token: a block is 4·2·10 = 80 B, a slot 4·2·10 = 80 B.
KvLayout tiny_layout() {
  return KvLayout::for_lazy_fraction(4, 0.5, 4, 1, 3, 10).value();
}

TEST(CapacityTest, SmallCaseByHand) {
  // 10 tokens: hybrid = 1 slot + 3 blocks = 320 B; full = 3 blocks of 4 tokens x 4 layers x 10 B
  // = 480 B. 1000 B: 3 hybrid sequences (3 slots = 240 B, then 760 / 80 = 9 blocks), 2 full.
  Result<CapacityPlan> plan = plan_capacity(tiny_layout(), 1000, 10);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_slots, 3);
  EXPECT_EQ(plan->num_blocks, 9);
  EXPECT_EQ(plan->arena_bytes, 960);
  EXPECT_EQ(plan->hybrid_bytes_per_sequence, 320);
  EXPECT_EQ(plan->full_bytes_per_sequence, 480);
  EXPECT_EQ(plan->max_hybrid_sequences, 3);
  EXPECT_EQ(plan->max_full_sequences, 2);
  EXPECT_DOUBLE_EQ(plan->concurrency_gain(), 1.5);
  EXPECT_NEAR(plan->bytes_ratio(), 2.0 / 3.0, 1e-12);
}

TEST(CapacityTest, SmolLm2At8KIn1GiB) {
  const KvLayout layout = KvLayout::for_lazy_fraction(30, 0.5, 16, 4, 1020, 768).value();
  Result<CapacityPlan> plan = plan_capacity(layout, int64_t{1} << 30, 8192);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  // Hybrid: 512 blocks · 180 KiB + 11.25 MiB slot = 101.25 MiB; full: 180 MiB.
  EXPECT_EQ(plan->hybrid_bytes_per_sequence, 512 * 184320 + 11796480);
  EXPECT_EQ(plan->max_hybrid_sequences, 10);
  EXPECT_EQ(plan->max_full_sequences, 5);
  EXPECT_EQ(plan->num_slots, 10);
  EXPECT_EQ(plan->num_blocks, ((int64_t{1} << 30) - 10 * 11796480) / 184320);
  EXPECT_LE(plan->arena_bytes, plan->budget_bytes);
  const std::string text = format_capacity(plan.value());
  EXPECT_NE(text.find("10 hybrid sequences"), std::string::npos) << text;
  EXPECT_NE(text.find("5 full-attention"), std::string::npos) << text;
  EXPECT_NE(text.find("2.00x the sequences"), std::string::npos) << text;
  EXPECT_NE(text.find("slots: 10 x (4 sink + 1020 window)"), std::string::npos) << text;
}

TEST(CapacityTest, NoLazyLayersMeansNoSlotsAndFullAttentionNumbers) {
  const KvLayout layout = KvLayout::for_lazy_fraction(4, 0.0, 4, 1, 3, 10).value();
  Result<CapacityPlan> plan = plan_capacity(layout, 1000, 10);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_slots, 0);
  EXPECT_EQ(plan->num_blocks, 1000 / 160);
  EXPECT_EQ(plan->max_hybrid_sequences, plan->max_full_sequences);
  EXPECT_NE(format_capacity(plan.value()).find("slots: none"), std::string::npos);
}

TEST(CapacityTest, EveryLayerLazyMeansNoBlocks) {
  const KvLayout layout = KvLayout::for_lazy_fraction(4, 1.0, 4, 1, 3, 10).value();
  Result<CapacityPlan> plan = plan_capacity(layout, 1000, 10);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_blocks, 0);
  EXPECT_EQ(plan->num_slots, 1000 / 160);  // a slot: 4 tokens x 4 lanes x 10 B
}

TEST(CapacityTest, ErrorWhenNotOneSequenceFitsNamesBothNumbers) {
  Result<CapacityPlan> tiny = plan_capacity(tiny_layout(), 300, 10);
  ASSERT_FALSE(tiny.ok());
  EXPECT_NE(tiny.error().message.find("300 B holds 4 tokens of full-attention KV"),
            std::string::npos)
      << tiny.error().message;
  EXPECT_NE(tiny.error().message.find("one 10-token sequence"), std::string::npos);

  const KvLayout layout = KvLayout::for_lazy_fraction(30, 0.5, 16, 4, 1020, 768).value();
  Result<CapacityPlan> smol = plan_capacity(layout, 10 << 20, 8192);
  ASSERT_FALSE(smol.ok());
  // 10 MiB / (16 tokens x 30 layers x 768 B) = 28 full blocks = 448 tokens.
  EXPECT_NE(smol.error().message.find("KV budget 10.0 MiB holds 448 tokens of full-attention KV, "
                                      "less than one 8192-token sequence"),
            std::string::npos)
      << smol.error().message;
}

TEST(CapacityTest, InvalidArguments) {
  EXPECT_FALSE(plan_capacity(tiny_layout(), 0, 10).ok());
  EXPECT_FALSE(plan_capacity(tiny_layout(), 1000, 0).ok());
  KvLayout broken = tiny_layout();
  broken.lanes_per_slot = 5;
  EXPECT_FALSE(plan_capacity(broken, 1000, 10).ok());
}

TEST(CapacityTest, FormatBytes) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(10 << 20), "10.0 MiB");
  EXPECT_EQ(format_bytes(int64_t{3} << 29), "1.50 GiB");
  EXPECT_EQ(format_bytes(184320), "180.0 KiB");
}

}  // namespace
}  // namespace lightserve::memory
