// The CPU element-wise ops and attention, every ISA build of them, against plain references.
#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/dtype.h"

namespace lightserve::kernels::cpu {
namespace {

std::vector<const OpsTable*> supported_tables() {
  const CpuFeatures f = CpuFeatures::detect();
  std::vector<const OpsTable*> tables = {&kOpsGeneric};
  if (f.avx2) tables.push_back(&kOpsAvx2);
  if (f.avx512) tables.push_back(&kOpsAvx512);
  return tables;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

float round_f16(float x) {
  return fp16_to_fp32(fp32_to_fp16(x));
}

TEST(Fp16, RoundTripMatchesHardwareRounding) {
  // Exact values survive; halfway cases round to even; overflow goes to infinity.
  EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(1.0f)), 1.0f);
  EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(-2.5f)), -2.5f);
  EXPECT_EQ(fp32_to_fp16(1.0f + 1.0f / 2048.0f), fp32_to_fp16(1.0f));  // tie → even
  EXPECT_EQ(fp32_to_fp16(1.0f + 3.0f / 2048.0f), fp32_to_fp16(1.0f + 2.0f / 1024.0f));
  EXPECT_TRUE(std::isinf(fp16_to_fp32(fp32_to_fp16(70000.0f))));
  EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(5.960464477539063e-08f)),
            5.960464477539063e-08f);  // min subnormal
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(fp32_to_fp16(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(Ops, RmsNormMatchesDoubleReference) {
  std::mt19937 rng(1);
  const int64_t n = 5, dim = 576;
  auto x = random_vector(n * dim, rng, 3.0f);
  auto w = random_vector(dim, rng);
  for (const OpsTable* t : supported_tables()) {
    std::vector<float> y(n * dim);
    t->rms_norm(x.data(), w.data(), n, dim, 1e-5f, y.data());
    for (int64_t r = 0; r < n; ++r) {
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
      const double scale = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int64_t i = 0; i < dim; ++i) {
        EXPECT_NEAR(y[r * dim + i], x[r * dim + i] * scale * w[i], 1e-5) << t->level;
      }
    }
  }
}

TEST(Ops, SwigluMatchesReference) {
  std::mt19937 rng(2);
  const int64_t n = 3, ff = 1536;
  auto gu = random_vector(n * 2 * ff, rng, 4.0f);
  gu[0] = -100.0f;  // exp overflow side
  gu[1] = 100.0f;
  for (const OpsTable* t : supported_tables()) {
    std::vector<float> out(n * ff);
    t->swiglu(gu.data(), n, ff, out.data());
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t i = 0; i < ff; ++i) {
        const double g = gu[r * 2 * ff + i], u = gu[r * 2 * ff + ff + i];
        const double expected = g / (1.0 + std::exp(-g)) * u;
        EXPECT_NEAR(out[r * ff + i], expected, 1e-5 * std::max(1.0, std::abs(expected)))
            << t->level;
      }
    }
  }
}

TEST(Ops, RopeRotatesAdjacentPairs) {
  std::mt19937 rng(3);
  const int64_t heads = 3, hd = 64, stride = heads * hd + 7;
  const std::vector<int32_t> positions = {0, 1, 17, 1000, 8191};
  RopeTable table;
  table.ensure(100000.0f, hd, 8192);
  auto x = random_vector(positions.size() * stride, rng);
  for (const OpsTable* t : supported_tables()) {
    auto y = x;
    t->rope(y.data(), positions, heads, hd, stride, table, /*neox=*/false);
    for (size_t r = 0; r < positions.size(); ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < hd / 2; ++i) {
          const double theta = positions[r] * std::pow(100000.0, -2.0 * i / hd);
          const double x0 = x[r * stride + h * hd + 2 * i], x1 = x[r * stride + h * hd + 2 * i + 1];
          // f32 θ accumulated step by step (as llama.cpp) drifts from the exact angle at large
          // positions: tolerance grows with the position.
          const double tol = 1e-5 + 2e-7 * positions[r];
          EXPECT_NEAR(y[r * stride + h * hd + 2 * i], x0 * std::cos(theta) - x1 * std::sin(theta),
                      tol);
          EXPECT_NEAR(y[r * stride + h * hd + 2 * i + 1],
                      x0 * std::sin(theta) + x1 * std::cos(theta), tol);
        }
      }
      // Padding past the heads is untouched.
      for (int64_t i = heads * hd; i < stride; ++i) EXPECT_EQ(y[r * stride + i], x[r * stride + i]);
    }
  }
}

// NEOX pairing (i, i + head_dim/2) with Llama-3.1-style frequency factors: pair i turns by
// pos · base^(−2i/hd) / factor[i]. Without factors the table must be rebuilt (it is cached).
TEST(Ops, RopeNeoxAndFrequencyFactorsMatchReference) {
  std::mt19937 rng(13);
  const int64_t heads = 3, hd = 64, stride = heads * hd + 5;
  const std::vector<int32_t> positions = {0, 1, 17, 1000, 8191};
  std::vector<float> factors(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) factors[i] = 1.0f + 7.0f * float(i) / float(hd / 2 - 1);
  auto x = random_vector(positions.size() * stride, rng);
  for (bool neox : {false, true}) {
    for (bool with_factors : {false, true}) {
      RopeTable table;
      table.ensure(500000.0f, hd, 8192, with_factors ? factors.data() : nullptr);
      for (const OpsTable* t : supported_tables()) {
        auto y = x;
        t->rope(y.data(), positions, heads, hd, stride, table, neox);
        for (size_t r = 0; r < positions.size(); ++r) {
          for (int64_t h = 0; h < heads; ++h) {
            for (int64_t i = 0; i < hd / 2; ++i) {
              const double f = with_factors ? factors[i] : 1.0;
              const double theta = positions[r] * std::pow(500000.0, -2.0 * i / hd) / f;
              const int64_t a = r * stride + h * hd + (neox ? i : 2 * i);
              const int64_t b = neox ? a + hd / 2 : a + 1;
              const double tol = 1e-5 + 2e-7 * positions[r];
              EXPECT_NEAR(y[a], x[a] * std::cos(theta) - x[b] * std::sin(theta), tol)
                  << t->level << " neox " << neox << " factors " << with_factors << " pos "
                  << positions[r] << " pair " << i;
              EXPECT_NEAR(y[b], x[a] * std::sin(theta) + x[b] * std::cos(theta), tol)
                  << t->level << " neox " << neox << " factors " << with_factors;
            }
          }
          for (int64_t i = heads * hd; i < stride; ++i) {
            EXPECT_EQ(y[r * stride + i], x[r * stride + i]);
          }
        }
      }
    }
  }
}

TEST(Ops, RopeTableRebuildsWhenFactorsChange) {
  std::vector<float> factors(8, 4.0f);
  RopeTable table;
  table.ensure(10000.0f, 16, 4);
  const float plain = table.cos_sin[3 * 16 + 1];  // sin of position 3, pair 0
  table.ensure(10000.0f, 16, 4, factors.data());
  EXPECT_FLOAT_EQ(table.cos_sin[3 * 16 + 1], std::sin(3.0f / 4.0f));
  table.ensure(10000.0f, 16, 4);
  EXPECT_EQ(table.cos_sin[3 * 16 + 1], plain);
  factors[0] = 2.0f;  // same pointer, new contents
  table.ensure(10000.0f, 16, 4, factors.data());
  EXPECT_FLOAT_EQ(table.cos_sin[3 * 16 + 1], std::sin(3.0f / 2.0f));
}

TEST(Ops, AddBiasBroadcastsOverRows) {
  std::mt19937 rng(14);
  for (int64_t width : {1, 7, 64, 320}) {
    const int64_t n = 5, stride = width + 3;
    auto y = random_vector(n * stride, rng);
    auto bias = random_vector(width, rng);
    for (const OpsTable* t : supported_tables()) {
      auto out = y;
      t->add_bias(out.data(), bias.data(), n, width, stride);
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t j = 0; j < stride; ++j) {
          const float want = j < width ? y[r * stride + j] + bias[j] : y[r * stride + j];
          EXPECT_EQ(out[r * stride + j], want) << t->level << " width " << width;
        }
      }
    }
  }
}

TEST(Ops, StoreF16IsExactConversion) {
  std::mt19937 rng(4);
  auto x = random_vector(4 * 40, rng, 10.0f);
  for (const OpsTable* t : supported_tables()) {
    std::vector<uint16_t> out(4 * 37, 0xffff);
    t->store_f16(x.data(), 40, 4, 35, out.data(), 37);
    for (int r = 0; r < 4; ++r) {
      for (int i = 0; i < 35; ++i)
        EXPECT_EQ(out[r * 37 + i], fp32_to_fp16(x[r * 40 + i])) << t->level;
      EXPECT_EQ(out[r * 37 + 35], 0xffff);
    }
  }
}

// Dense causal attention in double, as the reference for the flash-style kernel.
void reference_attention(const std::vector<float>& q, const AttentionSeq& seq,
                         const AttentionShape& s, std::vector<double>& out, bool round_p = false) {
  const int group = s.heads / s.kv_heads;
  for (int i = 0; i < seq.num_queries; ++i) {
    const int pos = seq.first_pos + i;
    for (int h = 0; h < s.heads; ++h) {
      const int kvh = h / group;
      std::vector<double> scores(pos + 1);
      double max_score = -1e300;
      for (int j = 0; j <= pos; ++j) {
        double dot = 0;
        for (int d = 0; d < s.head_dim; ++d) {
          dot += double(round_f16(q[(seq.first_row + i) * s.q_stride + h * s.head_dim + d])) *
                 fp16_to_fp32(seq.kv.k[j * seq.kv.row_stride + kvh * s.head_dim + d]);
        }
        scores[j] = dot * s.scale;
        max_score = std::max(max_score, scores[j]);
      }
      double sum = 0;
      for (auto& v : scores) sum += (v = std::exp(v - max_score));
      for (int d = 0; d < s.head_dim; ++d) {
        double acc = 0;
        for (int j = 0; j <= pos; ++j) {
          const double p =
              round_p ? round_f16(static_cast<float>(scores[j] / sum)) : scores[j] / sum;
          acc += p * fp16_to_fp32(seq.kv.v[j * seq.kv.row_stride + kvh * s.head_dim + d]);
        }
        out[(seq.first_row + i) * s.out_stride + h * s.head_dim + d] = acc;
      }
    }
  }
}

TEST(Ops, AttentionMatchesDenseReference) {
  std::mt19937 rng(5);
  const int heads = 9, kv_heads = 3, hd = 64;
  const int64_t kv_stride = kv_heads * hd;
  AttentionShape shape{
      heads, kv_heads, hd, heads * hd + 2 * kv_stride, heads * hd, 1.0f / std::sqrt(float(hd))};
  // A prefill from 0, a chunk continuing a cached prefix, and two decodes (one crossing a block).
  struct Case {
    int first_pos, num_queries;
  };
  const std::vector<Case> cases = {{0, 37}, {100, 70}, {64, 1}, {300, 1}};
  std::vector<std::vector<uint16_t>> ks, vs;
  std::vector<AttentionSeq> seqs;
  int64_t rows = 0;
  for (const Case& c : cases) {
    const int len = c.first_pos + c.num_queries;
    auto kf = random_vector(len * kv_stride, rng, 2.0f);
    auto vf = random_vector(len * kv_stride, rng);
    ks.emplace_back(kf.size());
    vs.emplace_back(vf.size());
    for (size_t i = 0; i < kf.size(); ++i) {
      ks.back()[i] = fp32_to_fp16(kf[i]);
      vs.back()[i] = fp32_to_fp16(vf[i]);
    }
    AttentionSeq seq;
    seq.first_row = rows;
    seq.num_queries = c.num_queries;
    seq.first_pos = c.first_pos;
    seq.kv.row_stride = kv_stride;
    seqs.push_back(seq);
    rows += c.num_queries;
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    seqs[i].kv.k = ks[i].data();
    seqs[i].kv.v = vs[i].data();
  }
  auto q = random_vector(rows * shape.q_stride, rng, 2.0f);
  for (bool round_p : {false, true}) {
    shape.round_probabilities_f16 = round_p;
    std::vector<double> expected(rows * shape.out_stride);
    for (const auto& seq : seqs) reference_attention(q, seq, shape, expected, round_p);

    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      for (const OpsTable* t : supported_tables()) {
        std::vector<float> out(rows * shape.out_stride, NAN);
        t->attention(pool, q.data(), seqs, shape, out.data());
        for (int64_t i = 0; i < rows * shape.out_stride; ++i) {
          // With rounding, a probability within an ulp of an f16 rounding boundary may round the
          // other way (our exp differs from std::exp by an ulp or two): one f16 ulp of p times |v|.
          const double tol = round_p ? 5e-4 : 2e-5;
          ASSERT_NEAR(out[i], expected[i], tol * std::max(1.0, std::abs(expected[i])))
              << t->level << " threads " << threads << " element " << i << " round_p " << round_p;
        }
      }
    }
  }
}

TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t count : {0, 1, 2, 7, 1000}) {
      for (int64_t grain : {1, 3, 64}) {
        std::vector<int> hits(count, 0);
        pool.parallel_for(count, grain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        for (int64_t i = 0; i < count; ++i) ASSERT_EQ(hits[i], 1);
      }
    }
  }
}

}  // namespace
}  // namespace lightserve::kernels::cpu
