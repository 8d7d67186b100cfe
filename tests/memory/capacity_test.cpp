#include "memory/capacity.h"

#include <gtest/gtest.h>

#include <string>

namespace lightserve::memory {
namespace {

// L = 4, f = 0.5 (2 full + 2 lazy layers), block_size 4, sink 1 + window 3, 10 bytes per lane
// token: a page is 4·10 = 40 B.
KvLayout tiny_layout() {
  return KvLayout::for_lazy_fraction(4, 0.5, 4, 1, 3, 10).value();
}

TEST(CapacityTest, SmallCaseByHand) {
  // 10 tokens: hybrid = 2 full lanes x 3 pages + 2 lazy lanes x 1 page (the 4-token ring) = 8
  // pages = 320 B; full = 4 lanes x 3 pages = 480 B. 1000 B = 25 pages: 3 hybrid, 2 full.
  Result<CapacityPlan> plan = plan_capacity(tiny_layout(), 1000, 10);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_pages, 25);
  EXPECT_EQ(plan->arena_bytes, 1000);
  EXPECT_EQ(plan->hybrid_bytes_per_sequence, 320);
  EXPECT_EQ(plan->full_bytes_per_sequence, 480);
  EXPECT_EQ(plan->max_hybrid_sequences, 3);
  EXPECT_EQ(plan->max_full_sequences, 2);
  EXPECT_DOUBLE_EQ(plan->concurrency_gain(), 1.5);
  EXPECT_NEAR(plan->bytes_ratio(), 2.0 / 3.0, 1e-12);
  // At 4 tokens (sink + window) or fewer a hybrid sequence is a full one: 4 pages each.
  const CapacityPlan::Sequences short_ones = plan->sequences_at(4);
  EXPECT_EQ(short_ones.pages_hybrid, 4);
  EXPECT_EQ(short_ones.pages_full, 4);
  EXPECT_EQ(short_ones.hybrid, 6);
  EXPECT_EQ(short_ones.full, 6);
}

TEST(CapacityTest, SmolLm2At8KIn1GiB) {
  const KvLayout layout = KvLayout::for_lazy_fraction(30, 0.5, 16, 4, 1020, 768).value();
  Result<CapacityPlan> plan = plan_capacity(layout, int64_t{1} << 30, 8192);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  // Hybrid: 15 full lanes x 512 pages + 15 lazy lanes x 64 pages of 12 KiB = 101.25 MiB (what
  // blocks + a slot cost before); full: 180 MiB.
  EXPECT_EQ(plan->hybrid_bytes_per_sequence, 512 * 184320 + 11796480);
  EXPECT_EQ(plan->num_pages, (int64_t{1} << 30) / 12288);
  EXPECT_EQ(plan->max_hybrid_sequences, 10);
  EXPECT_EQ(plan->max_full_sequences, 5);
  EXPECT_LE(plan->arena_bytes, plan->budget_bytes);
  const std::string text = format_capacity(plan.value());
  EXPECT_NE(text.find("10 hybrid sequences (8640 pages each)"), std::string::npos) << text;
  EXPECT_NE(text.find("5 full-attention (15360 pages each)"), std::string::npos) << text;
  EXPECT_NE(text.find("2.00x the sequences"), std::string::npos) << text;
  EXPECT_NE(text.find("pages: 87381 x 16 tokens x 1 layer"), std::string::npos) << text;
  EXPECT_NE(text.find("at 1024 tokens: 45 hybrid sequences"), std::string::npos) << text;
}

TEST(CapacityTest, DefaultsHoldSixtyFourShortRequests) {
  // The daemon's defaults (512 MiB, context 8192): the old split carved 5 lazy slots, so 5
  // requests ran at once however short. Now a 32-token request holds 30 x 2 pages.
  const KvLayout layout = KvLayout::for_lazy_fraction(30, 0.5, 16, 4, 1020, 768).value();
  Result<CapacityPlan> plan = plan_capacity(layout, int64_t{512} << 20, 8192);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->max_hybrid_sequences, 5);
  const CapacityPlan::Sequences short_ones = plan->sequences_at(32);
  EXPECT_EQ(short_ones.pages_hybrid, 60);
  EXPECT_GE(short_ones.hybrid, 64);
  EXPECT_EQ(short_ones.hybrid, short_ones.full);
}

TEST(CapacityTest, NoLazyLayersGivesFullAttentionNumbers) {
  const KvLayout layout = KvLayout::for_lazy_fraction(4, 0.0, 4, 1, 3, 10).value();
  Result<CapacityPlan> plan = plan_capacity(layout, 1000, 10);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_pages, 25);
  EXPECT_EQ(plan->max_hybrid_sequences, plan->max_full_sequences);
}

TEST(CapacityTest, EveryLayerLazyKeepsEachLaneAtTheRing) {
  const KvLayout layout = KvLayout::for_lazy_fraction(4, 1.0, 4, 1, 3, 10).value();
  Result<CapacityPlan> plan = plan_capacity(layout, 1000, 10);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_pages, 25);
  EXPECT_EQ(plan->max_hybrid_sequences, 25 / 4);  // 4 lanes x 1 page
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
  broken.lazy_layers = 5;
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
