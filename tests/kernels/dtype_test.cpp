// Element types: ggml's type ids and block sizes, and dequantize_row of each quantized type
// checked by hand on blocks built byte by byte from ggml's layout description.
#include "kernels/dtype.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace lightserve::kernels {
namespace {

void put16(uint8_t* p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

std::vector<float> dequantize(DType type, const std::vector<uint8_t>& block) {
  std::vector<float> out(static_cast<size_t>(traits(type).block_elements));
  dequantize_row(type, block.data(), out.data(), traits(type).block_elements);
  return out;
}

TEST(DTypeTest, GgmlIdsAndBlockSizes) {
  struct Expected {
    uint32_t id;
    const char* name;
    int64_t elements, bytes;
  };
  for (const Expected& e :
       {Expected{6, "Q5_0", 32, 22}, Expected{7, "Q5_1", 32, 24}, Expected{12, "Q4_K", 256, 144},
        Expected{13, "Q5_K", 256, 176}, Expected{14, "Q6_K", 256, 210}}) {
    const auto t = dtype_traits(e.id);
    ASSERT_TRUE(t.has_value()) << e.name;
    EXPECT_EQ(static_cast<uint32_t>(t->type), e.id);
    EXPECT_EQ(t->name, e.name);
    EXPECT_EQ(t->block_elements, e.elements) << e.name;
    EXPECT_EQ(t->block_bytes, e.bytes) << e.name;
  }
  // Q2_K, Q3_K (not computed with yet) and Q8_K (an activation type, never in files).
  for (uint32_t id : {10u, 11u, 15u}) EXPECT_FALSE(dtype_traits(id).has_value()) << id;
  EXPECT_EQ(row_bytes(DType::kQ4_K, 1536), 6 * 144);
  EXPECT_FALSE(row_bytes(DType::kQ6_K, 576).has_value());  // not whole super-blocks
}

TEST(DTypeTest, DequantizeQ5_0ByHand) {
  std::vector<uint8_t> b(22, 0);
  put16(b.data(), 0.5f);
  // qh (bytes 2..5): bit 0 set (value 0's fifth bit), bit 16 clear (value 16's).
  b[2] = 0x01;
  b[6 + 0] = 0x3a;  // value 0: nibble 10, value 16: nibble 3
  b[6 + 5] = 0xf0;  // value 5: nibble 0, value 21: nibble 15; bit 21 set below
  b[4] = 0x20;      // qh bit 21
  const auto v = dequantize(DType::kQ5_0, b);
  EXPECT_EQ(v[0], (26 - 16) * 0.5f);
  EXPECT_EQ(v[16], (3 - 16) * 0.5f);
  EXPECT_EQ(v[5], (0 - 16) * 0.5f);
  EXPECT_EQ(v[21], (31 - 16) * 0.5f);
  EXPECT_EQ(v[1], -8.0f);
}

TEST(DTypeTest, DequantizeQ5_1ByHand) {
  std::vector<uint8_t> b(24, 0);
  put16(b.data(), 0.25f);
  put16(b.data() + 2, -1.0f);
  b[4] = 0x02;      // qh bit 1
  b[6] = 0x02;      // qh bit 17
  b[8 + 1] = 0xf0;  // value 1: nibble 0, value 17: nibble 15
  const auto v = dequantize(DType::kQ5_1, b);
  EXPECT_EQ(v[1], 16 * 0.25f - 1.0f);
  EXPECT_EQ(v[17], 31 * 0.25f - 1.0f);
  EXPECT_EQ(v[0], -1.0f);
}

// Q4_K / Q5_K header: d = 1, dmin = 0.5; sub-block 0 scale 3 min 2, sub-block 1 scale 5 min 4,
// sub-block 4 scale 33 min 23 (6-bit values split over the packed bytes).
std::vector<uint8_t> k_header(size_t bytes) {
  std::vector<uint8_t> b(bytes, 0);
  put16(b.data(), 1.0f);
  put16(b.data() + 2, 0.5f);
  uint8_t* scales = b.data() + 4;
  scales[0] = 3 | (2 << 6);  // scale 0 = 3; top bits = scale 4's bits 4..5
  scales[1] = 5;
  scales[4] = 2 | (1 << 6);  // min 0 = 2; top bits = min 4's bits 4..5
  scales[5] = 4;
  scales[8] = 0x71;  // scale 4 low bits 1, min 4 low bits 7
  return b;
}

TEST(DTypeTest, DequantizeQ4_KByHand) {
  std::vector<uint8_t> b = k_header(144);
  uint8_t* qs = b.data() + 16;
  qs[0] = 0x27;   // value 0: 7 (sub-block 0), value 32: 2 (sub-block 1)
  qs[64] = 0x0b;  // value 128: 11 (sub-block 4)
  const auto v = dequantize(DType::kQ4_K, b);
  EXPECT_EQ(v[0], 3 * 7 - 0.5f * 2);
  EXPECT_EQ(v[32], 5 * 2 - 0.5f * 4);
  EXPECT_EQ(v[128], 33 * 11 - 0.5f * 23);
  EXPECT_EQ(v[1], -1.0f);
}

TEST(DTypeTest, DequantizeQ5_KByHand) {
  std::vector<uint8_t> b = k_header(176);
  uint8_t* qh = b.data() + 16;
  uint8_t* qs = b.data() + 48;
  qs[0] = 0x27;
  qs[64] = 0x0b;
  qh[0] = 0x01 | 0x10;  // fifth bits of value 0 (bit 0) and value 128 (bit 4)
  qh[3] = 0x02;         // fifth bit of value 35 (bit 1)
  const auto v = dequantize(DType::kQ5_K, b);
  EXPECT_EQ(v[0], 3 * (7 + 16) - 0.5f * 2);
  EXPECT_EQ(v[32], 5 * 2 - 0.5f * 4);
  EXPECT_EQ(v[35], 5 * 16 - 0.5f * 4);
  EXPECT_EQ(v[128], 33 * (11 + 16) - 0.5f * 23);
}

TEST(DTypeTest, DequantizeQ6_KByHand) {
  std::vector<uint8_t> b(210, 0);
  uint8_t* ql = b.data();
  uint8_t* qh = b.data() + 128;
  auto* scales = reinterpret_cast<int8_t*>(b.data() + 192);
  put16(b.data() + 208, 0.5f);
  scales[0] = -2;  // values 0..15
  scales[2] = 3;   // values 32..47
  scales[4] = 1;   // values 64..79
  scales[6] = -1;  // values 96..111
  scales[8] = 4;   // values 128..143
  ql[0] = 0x5c;    // value 0: 12, value 64: 5
  ql[32] = 0xe4;   // value 32: 4, value 96: 14
  qh[0] = 0x9d;    // high bits: value 0: 1, value 32: 3, value 64: 1, value 96: 2
  ql[64] = 0x01;   // value 128: 1
  qh[32] = 0x03;   // value 128: high bits 3
  const auto v = dequantize(DType::kQ6_K, b);
  EXPECT_EQ(v[0], 0.5f * -2 * (28 - 32));
  EXPECT_EQ(v[32], 0.5f * 3 * (52 - 32));
  EXPECT_EQ(v[64], 0.5f * 1 * (21 - 32));
  EXPECT_EQ(v[96], 0.5f * -1 * (46 - 32));
  EXPECT_EQ(v[128], 0.5f * 4 * (49 - 32));
  EXPECT_EQ(v[1], 0.5f * -2 * -32);
}

}  // namespace
}  // namespace lightserve::kernels
