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

// One row per (L, f): the hybrid's layers, then pages for 100 tokens (7 per full lane, 7 per
// lazy lane below sink + window) and for 4000 tokens (250 per full lane, 64 per lazy lane) under
// the hybrid footprint; the overrides are other splits of the same pool.
struct FootprintCase {
  int32_t num_layers;
  double lazy_fraction;
  int32_t full_layers;
  int32_t lazy_layers;
  int64_t hybrid_pages_100;
  int64_t hybrid_pages_4000;
};

TEST(KvLayoutTest, FootprintsAcrossLazyFractions) {
  const FootprintCase cases[] = {
      // L = 30
      {30, 0.0, 30, 0, 30 * 7, 30 * 250},
      {30, 0.25, 22, 8, 30 * 7, 22 * 250 + 8 * 64},  // round(7.5) = 8 lazy
      {30, 0.5, 15, 15, 30 * 7, 15 * 250 + 15 * 64},
      {30, 0.75, 7, 23, 30 * 7, 7 * 250 + 23 * 64},  // round(22.5) = 23 lazy
      {30, 1.0, 0, 30, 30 * 7, 30 * 64},
      // L = 32
      {32, 0.0, 32, 0, 32 * 7, 32 * 250},
      {32, 0.5, 16, 16, 32 * 7, 16 * 250 + 16 * 64},
      {32, 1.0, 0, 32, 32 * 7, 32 * 64},
  };
  for (const FootprintCase& c : cases) {
    SCOPED_TRACE("L=" + std::to_string(c.num_layers) + " f=" + std::to_string(c.lazy_fraction));
    const KvLayout layout = layout_for(c.num_layers, c.lazy_fraction);
    EXPECT_EQ(layout.full_layers, c.full_layers);
    EXPECT_EQ(layout.lazy_layers, c.lazy_layers);
    const Footprint hybrid = layout.hybrid_footprint();
    ASSERT_TRUE(layout.check_footprint(hybrid).ok());
    EXPECT_EQ(layout.pages_for(100, hybrid), c.hybrid_pages_100);
    EXPECT_EQ(layout.pages_for(4000, hybrid), c.hybrid_pages_4000);
    // Every split of the layers draws from the one pool: the overrides fit any layout.
    ASSERT_TRUE(layout.check_footprint(layout.full_footprint()).ok());
    ASSERT_TRUE(layout.check_footprint(layout.streaming_footprint()).ok());
    EXPECT_EQ(layout.pages_for(4000, layout.full_footprint()), c.num_layers * 250);
    EXPECT_EQ(layout.pages_for(4000, layout.streaming_footprint()), c.num_layers * 64);
  }
}

TEST(KvLayoutTest, LazyLanesGrowLikeFullOnesUpToSinkPlusWindowThenStay) {
  const KvLayout layout = layout_for(30, 0.5);
  for (int64_t tokens : {0, 1, 16, 17, 100, 1023, 1024}) {
    EXPECT_EQ(layout.lazy_lane_pages(tokens), layout.full_lane_pages(tokens)) << tokens;
    // Short requests cost exactly what full attention costs.
    EXPECT_EQ(layout.bytes_for(tokens, layout.hybrid_footprint()),
              layout.full_attention_bytes_for(tokens))
        << tokens;
  }
  EXPECT_EQ(layout.full_lane_pages(17), 2);
  EXPECT_EQ(layout.full_lane_pages(16384), 1024);
  for (int64_t tokens : {int64_t{1025}, int64_t{2000}, int64_t{16384}, int64_t{1} << 30}) {
    EXPECT_EQ(layout.lazy_lane_pages(tokens), 64) << tokens;  // ceil((4 + 1020) / 16)
  }
  // A window that is not a multiple of the page: the ring's last page is partly used.
  KvLayout odd = layout;
  odd.window = 1000;
  EXPECT_EQ(odd.lazy_lane_pages(5000), 63);  // ceil(1004 / 16)
}

TEST(KvLayoutTest, PageBytes) {
  const KvLayout layout = layout_for(30, 0.5);
  EXPECT_EQ(layout.page_bytes(), 16 * kSmolBytesPerLaneToken);  // 12 KiB
  EXPECT_EQ(layout_for(30, 0.0).page_bytes(), layout.page_bytes());
  EXPECT_EQ(layout.bytes_for(100, layout.hybrid_footprint()), 30 * 7 * layout.page_bytes());
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

TEST(KvLayoutTest, RingRowsOfTokensLieInTheLanesPages) {
  const KvLayout layout = layout_for(30, 0.5);
  for (int64_t t = 0; t < 5000; ++t) {
    // The ring row of token t lies in the pages a lazy lane of t + 1 tokens holds.
    EXPECT_LT(layout.ring_row(t) / layout.block_size, layout.lazy_lane_pages(t + 1)) << t;
  }
  EXPECT_EQ(layout.page_row(3, 5), 3 * 16 + 5);
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
  EXPECT_EQ(layout.pages_for(32, {20, 10}), 30 * 2);
  EXPECT_EQ(layout.pages_for(2048, {20, 10}), 20 * 128 + 10 * 64);
}

}  // namespace
}  // namespace lightserve::memory
