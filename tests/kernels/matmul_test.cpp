// CPU matmul: every ISA level against the scalar oracle, the oracle against a naive f64 dot of
// dequantized weights, and the activation quantization against llama.cpp's formulas bit for bit.
#include "kernels/cpu/matmul.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/matmul_kernels.h"
#include "tests/kernels/random_rows.h"

namespace lightserve::kernels::cpu {
namespace {

using detail::Q8Block;
using detail::quantize_block_reference;
using testing::random_rows;

std::vector<float> random_acts(int64_t n, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (auto& v : x) v = dist(rng);
  // Some outlier channels and an all-zero block, as real activations have.
  for (int64_t t = 0; t < n; ++t) {
    x[t * cols + (t * 7) % cols] *= 20.0f;
    if (cols >= 64 && t % 3 == 0) std::fill_n(x.begin() + t * cols + 32, 32, 0.0f);
  }
  return x;
}

bool is_quantized(DType type) {
  return traits(type).block_elements > 1;
}

// Width of the blocks the activations are quantized in for `type`'s weights (Q8_0 / Q8_1: 32,
// Q8_K: 256).
int64_t activation_block(DType type) {
  return detail::is_kquant(type) ? kSuperBlock : 32;
}

std::vector<std::string> supported_levels() {
  const CpuFeatures all = CpuFeatures::detect();
  std::vector<std::string> levels = {"scalar"};
  if (all.avx2) levels.push_back("avx2");
  if (all.avx2 && all.avx_vnni) levels.push_back("avx2-no-vnni");
  if (all.avx512 && all.avx512_vnni) levels.push_back("avx512");
  if (all.amx_int8) levels.push_back("amx");
  return levels;
}

CpuFeatures features_for(const std::string& level) {
  const CpuFeatures all = CpuFeatures::detect();
  if (level == "avx2-no-vnni") {
    CpuFeatures f = all.limited_to("avx2");
    f.avx_vnni = false;
    return f;
  }
  if (level == "amx") return all;
  return all.limited_to(level);
}

struct Shape {
  std::vector<int64_t> part_rows;
  int64_t cols;
};

// |a − b| ≤ tol · max|b| over the whole output.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                  const std::string& what) {
  double scale = 1e-30;
  for (float v : want) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  int bad = 0;
  for (size_t i = 0; i < want.size() && bad < 5; ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol * scale)) {
      ADD_FAILURE() << what << " at " << i << ": got " << got[i] << " want " << want[i]
                    << " (scale " << scale << ")";
      ++bad;
    }
  }
}

TEST(CpuFeaturesTest, LimitedToDropsHigherLevels) {
  const CpuFeatures all = CpuFeatures::detect();
  const CpuFeatures scalar = all.limited_to("scalar");
  EXPECT_FALSE(scalar.avx2 || scalar.avx512 || scalar.amx_int8);
  EXPECT_EQ(scalar.describe(), "scalar");
  const CpuFeatures avx2 = all.limited_to("avx2");
  EXPECT_EQ(avx2.avx2, all.avx2);
  EXPECT_FALSE(avx2.avx512 || avx2.avx512_vnni || avx2.amx_int8);
  EXPECT_FALSE(all.limited_to("avx512").amx_int8);
  if (all.avx512) {
    EXPECT_TRUE(all.avx2);
  }
  std::printf("cpu features: %s\n", all.describe().c_str());
}

TEST(MatmulQuantizeTest, MatchesLlamaCppFormulasBitForBit) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = 0.0f;
  // amax = 127 → d = 1, id = 1: quants are the values rounded half to even.
  x[0] = 127.0f;
  x[1] = 2.5f;   // tie → 2
  x[2] = 3.5f;   // tie → 4
  x[3] = -2.5f;  // tie → −2
  x[4] = -0.5f;  // tie → −0
  x[5] = 1.49f;
  x[6] = -126.6f;
  Q8Block b = quantize_block_reference(x);
  EXPECT_EQ(b.d, fp32_to_fp16(1.0f));
  const int8_t want[7] = {127, 2, 4, -2, 0, 1, -127};
  for (int j = 0; j < 7; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;
  EXPECT_EQ(b.sum, 127 + 2 + 4 - 2 + 0 + 1 - 127);
  EXPECT_EQ(b.s, fp32_to_fp16(5.0f));

  // A general block: check the formulas with id = 127 / amax (not 1 / d).
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (int trial = 0; trial < 1000; ++trial) {
    for (float& v : x) v = dist(rng);
    b = quantize_block_reference(x);
    float amax = 0.0f;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    const float d = amax / 127.0f, id = 127.0f / amax;
    ASSERT_EQ(b.d, fp32_to_fp16(d));
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      const float scaled = x[j] * id;
      float r = std::floor(scaled + 0.5f);
      if (r - scaled == 0.5f && std::fmod(r, 2.0f) != 0.0f) r -= 1.0f;  // tie: to even
      ASSERT_EQ(b.qs[j], static_cast<int8_t>(r)) << trial << " " << j;
      sum += b.qs[j];
    }
    ASSERT_EQ(b.sum, sum);
    ASSERT_EQ(b.s, fp32_to_fp16(d * static_cast<float>(sum)));
  }

  // All zero: d = 0, quants 0.
  for (float& v : x) v = 0.0f;
  b = quantize_block_reference(x);
  EXPECT_EQ(b.d, 0);
  EXPECT_EQ(b.s, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], 0);
}

// Every ISA's quantizer gives the reference's bits.
TEST(MatmulQuantizeTest, SimdQuantizersAreBitIdentical) {
  std::mt19937 rng(11);
  const int64_t n = 5, cols = 1536;
  std::vector<float> x = random_acts(n, cols, rng);
  for (const std::string& level : supported_levels()) {
    const CpuFeatures f = features_for(level);
    const detail::KernelSet& ks = f.avx512 && f.avx512_vnni ? detail::avx512_kernels()
                                  : f.avx2                  ? detail::avx2_kernels(f.avx_vnni)
                                                            : detail::scalar_kernels();
    std::vector<int8_t> qs(n * cols);
    std::vector<float> d(n * cols / 32), s(n * cols / 32);
    std::vector<int32_t> sum(n * cols / 32);
    const detail::QuantizedActs a{n, cols, cols / 32, qs.data(), d.data(), s.data(), sum.data()};
    ks.quantize(x.data(), 0, n, a);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t blk = 0; blk < cols / 32; ++blk) {
        const Q8Block want = quantize_block_reference(x.data() + t * cols + blk * 32);
        const int64_t ab = t * (cols / 32) + blk;
        ASSERT_EQ(fp32_to_fp16(d[ab]), want.d) << level;
        ASSERT_EQ(fp32_to_fp16(s[ab]), want.s) << level;
        ASSERT_EQ(sum[ab], want.sum) << level;
        ASSERT_EQ(std::memcmp(qs.data() + t * cols + blk * 32, want.qs, 32), 0) << level;
      }
    }
  }
}

// quantize_row_q8_K_ref: the first value of largest magnitude sets the sign of d, ties round to
// even, bsums are the sums of each 16 quants.
TEST(MatmulQuantizeTest, Q8KMatchesLlamaCppFormulas) {
  float x[256] = {};
  x[5] = -127.0f;  // first of the largest magnitude: max = −127, iscale = 1, d = 1
  x[9] = 127.0f;
  x[10] = 2.5f;   // tie → 2
  x[11] = 3.5f;   // tie → 4
  x[12] = -2.5f;  // tie → −2
  x[200] = 1.49f;
  BlockQ8_K b = detail::quantize_block_q8k_reference(x);
  EXPECT_EQ(b.d, 1.0f);
  EXPECT_EQ(b.qs[5], -127);
  EXPECT_EQ(b.qs[9], 127);
  EXPECT_EQ(b.qs[10], 2);
  EXPECT_EQ(b.qs[11], 4);
  EXPECT_EQ(b.qs[12], -2);
  EXPECT_EQ(b.qs[200], 1);
  EXPECT_EQ(b.bsums[0], -127 + 127 + 2 + 4 - 2);
  EXPECT_EQ(b.bsums[12], 1);
  EXPECT_EQ(b.bsums[1], 0);

  // Positive maximum first: iscale = −1, d = −1, quants negated.
  std::swap(x[5], x[9]);
  b = detail::quantize_block_q8k_reference(x);
  EXPECT_EQ(b.d, -1.0f);
  EXPECT_EQ(b.qs[5], -127);
  EXPECT_EQ(b.qs[9], 127);
  EXPECT_EQ(b.qs[10], -2);
  EXPECT_EQ(b.qs[200], -1);

  // A general block: d is 1 / iscale (not max / −127), and d · q recovers x within d / 2.
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (int trial = 0; trial < 200; ++trial) {
    for (float& v : x) v = dist(rng);
    b = detail::quantize_block_q8k_reference(x);
    float max = 0.0f;
    for (float v : x) {
      if (std::fabs(v) > std::fabs(max)) max = v;
    }
    const float iscale = -127.0f / max;
    ASSERT_EQ(b.d, 1.0f / iscale);
    for (int j = 0; j < 256; ++j) {
      ASSERT_EQ(b.qs[j], static_cast<int8_t>(std::nearbyint(iscale * x[j]))) << j;
      ASSERT_LE(std::fabs(b.d * b.qs[j] - x[j]), std::fabs(b.d) * 0.5f + 1e-6f);
    }
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += b.qs[16 * g + j];
      ASSERT_EQ(b.bsums[g], sum);
    }
  }

  // All zero: d = 0, quants and sums 0.
  std::fill(std::begin(x), std::end(x), 0.0f);
  b = detail::quantize_block_q8k_reference(x);
  EXPECT_EQ(b.d, 0.0f);
  for (int j = 0; j < 256; ++j) ASSERT_EQ(b.qs[j], 0);
  for (int g = 0; g < 16; ++g) ASSERT_EQ(b.bsums[g], 0);
}

// The Q5 fifth-bit rearrangement of the repacked layout round-trips and puts value 4k + i's bit
// at bit k of byte i, value 16 + 4k + i's at bit 4 + k.
TEST(MatmulLayoutTest, FifthBitsRepackRoundTrips) {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 1000; ++trial) {
    const uint32_t qh = rng();
    ASSERT_EQ(detail::unpack_fifth_bits(detail::repack_fifth_bits(qh)), qh);
  }
  EXPECT_EQ(detail::repack_fifth_bits(1u << 6), 1u << (8 * 2 + 1));       // value 6: k 1, i 2
  EXPECT_EQ(detail::repack_fifth_bits(1u << 31), 1u << (8 * 3 + 4 + 3));  // value 31: k 3, i 3
}

class MatmulTypeTest : public ::testing::TestWithParam<DType> {};

// The oracle against dequantize-then-f64-dot. The difference is the activation quantization:
// each activation moves by at most half a step d = amax/127 (plus the f16 rounding of d, under
// 0.1 step), so |error| ≤ Σ_blocks 0.6 · d_block · Σ|w| (+ the f16 rounding of s for Q4_1:
// |m| · 32 · amax · 2⁻¹⁰). Float weights have no quantization: f64 vs f64.
TEST_P(MatmulTypeTest, ReferenceMatchesNaiveWithinQuantizationError) {
  const DType type = GetParam();
  std::mt19937 rng(static_cast<unsigned>(type) + 1);
  const int64_t rows = 37, cols = 512, n = 3;
  const auto data = random_rows(type, rows, cols, rng);
  const auto x = random_acts(n, cols, rng);
  const WeightView view{type, rows, cols, data.data()};
  std::vector<float> y(n * rows);
  detail::reference_matmul({&view, 1}, x.data(), n, y.data());
  std::vector<float> w(cols);
  const int64_t rb = *row_bytes(type, cols);
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(type, data.data() + r * rb, w.data(), cols);
    for (int64_t t = 0; t < n; ++t) {
      double exact = 0.0, bound = 1e-5;
      const int64_t ab = activation_block(type);
      for (int64_t b = 0; b < cols / ab; ++b) {
        double amax = 0.0, wabs = 0.0;
        for (int j = 0; j < ab; ++j) {
          const int64_t i = b * ab + j;
          exact += static_cast<double>(w[i]) * x[t * cols + i];
          amax = std::max(amax, static_cast<double>(std::fabs(x[t * cols + i])));
          wabs += std::fabs(w[i]);
        }
        if (is_quantized(type)) {
          bound += 0.6 * amax / 127.0 * wabs;
          if (type == DType::kQ4_1 || type == DType::kQ5_1) {
            const int64_t block_bytes = traits(type).block_bytes;
            uint16_t mh;
            std::memcpy(&mh, data.data() + r * rb + b * block_bytes + 2, 2);
            bound += std::fabs(fp16_to_fp32(mh)) * 32.0 * amax / 1024.0;
          }
        }
      }
      EXPECT_NEAR(y[t * rows + r], exact, bound) << "row " << r << " token " << t;
    }
  }
}

// Every ISA level and thread count against the oracle, over shapes that leave partial row
// groups and token tiles, with concatenated parts.
TEST_P(MatmulTypeTest, EveryLevelMatchesReference) {
  const DType type = GetParam();
  const std::vector<Shape> shapes =
      detail::is_kquant(type)
          ? std::vector<Shape>{{{16}, 256},   {{5}, 512},           {{37}, 768},
                               {{8, 3}, 256}, {{40, 24, 17}, 1536}, {{50}, 3072}}
          : std::vector<Shape>{{{16}, 32},          {{5}, 64},        {{37}, 96},
                               {{40, 24, 17}, 576}, {{96, 33}, 1536}, {{50}, 3072}};
  const std::vector<int64_t> token_counts = {1, 2, 3, 7, 16, 33, 100, 512};
  std::mt19937 rng(static_cast<unsigned>(type) * 31 + 5);
  ThreadPool pool1(1), pool2(2);
  for (const Shape& shape : shapes) {
    std::vector<std::vector<uint8_t>> storage;
    std::vector<WeightView> parts;
    int64_t rows = 0;
    for (int64_t pr : shape.part_rows) {
      storage.push_back(random_rows(type, pr, shape.cols, rng));
      rows += pr;
    }
    for (size_t i = 0; i < storage.size(); ++i) {
      parts.push_back({type, shape.part_rows[i], shape.cols, storage[i].data()});
    }
    for (int64_t n : token_counts) {
      if (n * rows * shape.cols > 40'000'000) continue;  // keep the scalar oracle quick
      const auto x = random_acts(n, shape.cols, rng);
      std::vector<float> want(n * rows);
      detail::reference_matmul(parts, x.data(), n, want.data());
      for (const std::string& level : supported_levels()) {
        const CpuFeatures f = features_for(level);
        auto w = make_weight(parts, f);
        ASSERT_NE(w, nullptr);
        ASSERT_EQ(w->rows(), rows);
        for (ThreadPool* pool : {&pool1, &pool2}) {
          std::vector<float> got(n * rows, NAN);
          matmul(*pool, f, *w, x.data(), n, got.data());
          expect_close(got, want, 1e-5,
                       std::string(traits(type).name) + " " + level + " rows " +
                           std::to_string(rows) + " cols " + std::to_string(shape.cols) + " n " +
                           std::to_string(n) + " threads " + std::to_string(pool->num_threads()));
        }
      }
    }
  }
}

// Each output is one row's dot with one token, accumulated over blocks in block order whatever
// the kernel's token tile (AVX-512: up to 16 tokens, ragged tails down to 1; AVX2: 4; AMX: 16),
// integer chain split or thread split: a batch gives, bit for bit, what its tokens give one at a
// time (so batching never changes a generated token). A kernel whose float accumulation order
// depended on the tile would fail here, not only against the oracle's tolerance.
TEST_P(MatmulTypeTest, BatchEqualsOneTokenAtATimeBitForBit) {
  const DType type = GetParam();
  const int64_t cols = detail::is_kquant(type) ? 768 : 576;
  std::mt19937 rng(static_cast<unsigned>(type) * 17 + 3);
  const auto data = random_rows(type, 200, cols, rng);  // 12.5 row groups
  const WeightView view{type, 200, cols, data.data()};
  ThreadPool pool1(1), pool2(2);
  for (int64_t n : {2, 8, 15, 16, 17, 31, 33, 64, 100, 137}) {
    const auto x = random_acts(n, cols, rng);
    for (const std::string& level : supported_levels()) {
      const CpuFeatures f = features_for(level);
      auto w = make_weight({&view, 1}, f);
      ASSERT_NE(w, nullptr);
      std::vector<float> one(200);
      for (ThreadPool* pool : {&pool1, &pool2}) {
        std::vector<float> batch(n * 200, NAN);
        matmul(*pool, f, *w, x.data(), n, batch.data());
        for (int64_t t = 0; t < n; ++t) {
          matmul(pool1, f, *w, x.data() + t * cols, 1, one.data());
          for (int64_t r = 0; r < 200; ++r) {
            ASSERT_EQ(std::bit_cast<uint32_t>(batch[t * 200 + r]), std::bit_cast<uint32_t>(one[r]))
                << traits(type).name << " " << level << " n " << n << " threads "
                << pool->num_threads() << " token " << t << " row " << r << ": "
                << batch[t * 200 + r] << " vs " << one[r];
          }
        }
      }
    }
  }
}

TEST_P(MatmulTypeTest, EmbedMatchesDequantize) {
  const DType type = GetParam();
  std::mt19937 rng(3);
  const int64_t cols = detail::is_kquant(type) ? 512 : 96;
  const auto a = random_rows(type, 20, cols, rng);
  const auto b = random_rows(type, 13, cols, rng);
  const WeightView parts[2] = {{type, 20, cols, a.data()}, {type, 13, cols, b.data()}};
  auto w = make_weight(parts, CpuFeatures::detect());
  const std::vector<int32_t> ids = {0, 19, 20, 32, 7, 17};
  std::vector<float> got(ids.size() * cols), want(cols);
  embed(*w, ids, got.data());
  const int64_t rb = *row_bytes(type, cols);
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint8_t* src = ids[i] < 20 ? a.data() + ids[i] * rb : b.data() + (ids[i] - 20) * rb;
    dequantize_row(type, src, want.data(), cols);
    for (int64_t j = 0; j < cols; ++j) ASSERT_EQ(got[i * cols + j], want[j]) << i << " " << j;
  }
}

// Q, K and V of a K-quant mix have different types: one weight, each part with its own type's
// numerics, at every level, and embed reads each part.
TEST(MatmulTest, MixedTypePartsMatchEachPartsReference) {
  std::mt19937 rng(21);
  const int64_t cols = 512;
  const std::vector<std::pair<DType, int64_t>> layout = {{DType::kQ5_0, 37},
                                                         {DType::kQ5_0, 16},
                                                         {DType::kQ6_K, 20},
                                                         {DType::kQ8_0, 9},
                                                         {DType::kF16, 3}};
  std::vector<std::vector<uint8_t>> storage;
  std::vector<WeightView> parts;
  int64_t rows = 0;
  for (const auto& [type, part_rows] : layout)
    storage.push_back(random_rows(type, part_rows, cols, rng));
  for (size_t i = 0; i < layout.size(); ++i) {
    parts.push_back({layout[i].first, layout[i].second, cols, storage[i].data()});
    rows += layout[i].second;
  }
  ThreadPool pool(2);
  for (int64_t n : {1, 5, 40}) {
    const auto x = random_acts(n, cols, rng);
    std::vector<float> want(n * rows);
    int64_t first = 0;
    for (const WeightView& p : parts) {
      std::vector<float> part_y(n * p.rows);
      detail::reference_matmul({&p, 1}, x.data(), n, part_y.data());
      for (int64_t t = 0; t < n; ++t) {
        std::copy_n(part_y.begin() + t * p.rows, p.rows, want.begin() + t * rows + first);
      }
      first += p.rows;
    }
    for (const std::string& level : supported_levels()) {
      const CpuFeatures f = features_for(level);
      auto w = make_weight(parts, f);
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(w->rows(), rows);
      EXPECT_EQ(w->type(), DType::kQ5_0);
      std::vector<float> got(n * rows, NAN);
      matmul(pool, f, *w, x.data(), n, got.data());
      expect_close(got, want, 1e-5, "mixed " + level + " n " + std::to_string(n));
    }
  }
  auto w = make_weight(parts, CpuFeatures::detect());
  const std::vector<int32_t> ids = {0, 52, 53, 72, 73, 81, 82, 84};
  std::vector<float> got(ids.size() * cols), want(cols);
  embed(*w, ids, got.data());
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t id = ids[i];
    size_t p = 0;
    while (id >= parts[p].rows) id -= parts[p++].rows;
    const int64_t rb = *row_bytes(parts[p].type, cols);
    dequantize_row(parts[p].type, storage[p].data() + id * rb, want.data(), cols);
    for (int64_t j = 0; j < cols; ++j) ASSERT_EQ(got[i * cols + j], want[j]) << ids[i] << " " << j;
  }
}

TEST(MatmulTest, ResidentBytesEqualFileBytesForFullGroups) {
  std::mt19937 rng(1);
  for (DType type : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                     DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    const auto data = random_rows(type, 64, 1536, rng);
    const WeightView view{type, 64, 1536, data.data()};
    auto w = make_weight({&view, 1}, CpuFeatures::detect());
    EXPECT_EQ(w->resident_bytes(), static_cast<int64_t>(data.size())) << traits(type).name;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatmulTypeTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0,
                                           DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                                           DType::kQ4_K, DType::kQ5_K, DType::kQ6_K),
                         [](const auto& info) { return std::string(traits(info.param).name); });

}  // namespace
}  // namespace lightserve::kernels::cpu
