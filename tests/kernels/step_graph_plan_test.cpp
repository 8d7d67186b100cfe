// The host-side arithmetic of the CUDA backend's decode-step graphs (kernels/cuda/
// step_graph_plan.h): what must not change within a bucket (so that one graph serves every step
// of it) and what the attention grid covers.
#include "kernels/cuda/step_graph_plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace lightserve::kernels::cuda {
namespace {

TEST(StepGraphPlan, RowsRoundUpToPowersOfTwoWithinTheLimit) {
  EXPECT_EQ(decode_bucket_rows(0, 512), 0);
  EXPECT_EQ(decode_bucket_rows(-3, 512), 0);
  EXPECT_EQ(decode_bucket_rows(1, 512), 1);
  EXPECT_EQ(decode_bucket_rows(2, 512), 2);
  EXPECT_EQ(decode_bucket_rows(3, 512), 4);
  EXPECT_EQ(decode_bucket_rows(33, 512), 64);
  EXPECT_EQ(decode_bucket_rows(512, 512), 512);
  EXPECT_EQ(decode_bucket_rows(513, 512), 0);  // past the largest bucket: eager
  for (int64_t rows = 1; rows <= 300; ++rows) {
    const int64_t b = decode_bucket_rows(rows, 512);
    EXPECT_GE(b, rows);
    EXPECT_LT(b, 2 * rows);
    EXPECT_EQ(b & (b - 1), 0) << b;
  }
}

// Two K/V stores per sequence: every row count of a bucket gives the same padded count, so the
// store launch's signature is the bucket's.
TEST(StepGraphPlan, StoreCountsPadToOneValuePerBucket) {
  for (int64_t bucket = 1; bucket <= 256; bucket *= 2) {
    for (int64_t rows = bucket / 2 + 1; rows <= bucket; ++rows) {
      EXPECT_EQ(padded_count(2 * rows, bucket), 2 * bucket) << rows << " rows";
    }
  }
  EXPECT_EQ(padded_count(0, 8), 0);
  EXPECT_EQ(padded_count(5, 0), 5);
  EXPECT_EQ(padded_count(17, 8), 24);
}

TEST(StepGraphPlan, AttentionGridCoversTheKeyBucketAndStaysFixedWithinIt) {
  const int32_t kMinSplit = 64;
  for (int32_t sms : {1, 108, 132}) {
    for (int64_t rows : {1, 4, 16, 64}) {
      for (int32_t kv_heads : {3, 8}) {
        const GraphAttentionGrid g = graph_attention_grid(rows, 1000, kv_heads, sms, kMinSplit);
        EXPECT_EQ(g.key_bucket, 1024);
        EXPECT_GE(g.split, kMinSplit);
        EXPECT_EQ(g.split & (g.split - 1), 0);
        EXPECT_GE(static_cast<int64_t>(g.splits) * g.split, g.key_bucket);
        EXPECT_LT(static_cast<int64_t>(g.splits - 1) * g.split, g.key_bucket);
        // Every key count of the bucket gives the same grid.
        for (int32_t keys : {513, 700, 1024}) {
          const GraphAttentionGrid h = graph_attention_grid(rows, keys, kv_heads, sms, kMinSplit);
          EXPECT_EQ(h.key_bucket, g.key_bucket);
          EXPECT_EQ(h.split, g.split);
          EXPECT_EQ(h.splits, g.splits);
        }
        // The split grows only while the grid keeps >= 4 blocks per SM.
        if (g.split > kMinSplit) {
          EXPECT_GE(rows * g.splits * kv_heads, 4 * sms);
        }
      }
    }
  }
  // Short contexts share the smallest bucket; a key past it moves to the next.
  EXPECT_EQ(graph_attention_grid(4, 1, 3, 132, 64).key_bucket, 256);
  EXPECT_EQ(graph_attention_grid(4, 256, 3, 132, 64).key_bucket, 256);
  EXPECT_EQ(graph_attention_grid(4, 257, 3, 132, 64).key_bucket, 512);
}

TEST(StepGraphPlan, SignatureComparesEveryFieldInOrder) {
  StepSignature a, b;
  const float* p = reinterpret_cast<const float*>(0x1000);
  a.put(uint32_t{1}, p, int64_t{5}, 0.5f, true);
  b.put(uint32_t{1}, p, int64_t{5}, 0.5f, true);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.bytes().size(), 4u + sizeof(p) + 8u + 4u + 1u);
  StepSignature c;
  c.put(uint32_t{1}, p, int64_t{6}, 0.5f, true);
  EXPECT_FALSE(a == c);
  StepSignature d;  // same values, another order
  d.put(uint32_t{1}, int64_t{5}, p, 0.5f, true);
  EXPECT_FALSE(a == d);
  a.clear();
  EXPECT_TRUE(a.bytes().empty());
}

TEST(StepGraphPlan, StagingAlignsOffsetsAndZeroFillsReserves) {
  StepStaging s;
  const int32_t ids[3] = {7, 8, 9};
  EXPECT_EQ(s.stage(ids, sizeof(ids), 0), 0);
  const int64_t second = s.stage(ids, 4, 40);
  EXPECT_EQ(second, 16);
  EXPECT_EQ(s.size(), 16 + 40);
  int32_t v = -1;
  std::memcpy(&v, s.data() + second, 4);
  EXPECT_EQ(v, 7);
  for (int64_t i = second + 4; i < s.size(); ++i) EXPECT_EQ(s.data()[i], 0) << i;
  EXPECT_EQ(s.stage(nullptr, 0, 8), 64);  // a pure reservation
  s.clear();
  EXPECT_EQ(s.size(), 0);
}

TEST(StepGraphPlan, GraphCacheFindsBySignatureAndEvictsTheLeastRecentlyUsed) {
  GraphCache<int> cache(2);
  const std::vector<uint8_t> k1 = {1}, k2 = {2, 2}, k3 = {3};
  int evicted = -1;
  cache.insert(k1, &evicted).handle = 10;
  cache.insert(k2, &evicted).handle = 20;
  EXPECT_EQ(evicted, -1);
  ASSERT_NE(cache.find(k1), nullptr);  // k1 now the most recent
  EXPECT_EQ(cache.find(k1)->handle, 10);
  cache.insert(k3, &evicted).handle = 30;
  EXPECT_EQ(evicted, 20);  // k2 went
  EXPECT_EQ(cache.find(k2), nullptr);
  EXPECT_EQ(cache.find(k3)->handle, 30);
  EXPECT_EQ(cache.size(), 2u);
  const std::vector<int> handles = cache.clear();
  EXPECT_EQ(handles.size(), 2u);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.find(k1), nullptr);
}

}  // namespace
}  // namespace lightserve::kernels::cuda
