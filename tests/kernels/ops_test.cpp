// The CPU element-wise ops and attention, every ISA build of them, against plain references.
#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <iterator>
#include <random>
#include <string>
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
  if (f.avx512 && f.avx512_bf16) tables.push_back(&kOpsAvx512Bf16);
  return tables;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// A value of the KV cache type (f16 or bf16) and the rounding to it.
float kv_to_f32(uint16_t h, DType type) {
  return type == DType::kBF16 ? bf16_to_fp32(h) : fp16_to_fp32(h);
}
uint16_t f32_to_kv(float x, DType type) {
  return type == DType::kBF16 ? fp32_to_bf16(x) : fp32_to_fp16(x);
}
float round_kv(float x, DType type) {
  return kv_to_f32(f32_to_kv(x, type), type);
}

TEST(Bf16, RoundingMatchesVcvtneps2bf16) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(fp32_to_bf16(-2.5f), 0xc020);
  // Ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 → 1; 1 + 3·2^-8 → 1 + 2^-6.
  EXPECT_EQ(fp32_to_bf16(1.0f + 1.0f / 256.0f), 0x3f80);
  EXPECT_EQ(fp32_to_bf16(1.0f + 3.0f / 256.0f), 0x3f82);
  EXPECT_EQ(fp32_to_bf16(3.0e38f), 0x7f62);  // f32's range: f16 would overflow at 65520
  EXPECT_EQ(fp32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(fp32_to_bf16(1e-40f), 0x0000);   // subnormal → +0 (as the instruction)
  EXPECT_EQ(fp32_to_bf16(-1e-40f), 0x8000);  // → −0
  EXPECT_EQ(fp32_to_bf16(NAN) & 0x7fc0, 0x7fc0);
  EXPECT_EQ(bf16_to_fp32(0x3f82), 1.0f + 1.0f / 64.0f);
  EXPECT_EQ(parse_kv_type("bf16"), DType::kBF16);
  EXPECT_EQ(parse_kv_type("f16"), DType::kF16);
  EXPECT_FALSE(parse_kv_type("f32").has_value());
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

TEST(Ops, StoreKvIsExactConversion) {
  std::mt19937 rng(4);
  auto x = random_vector(4 * 40, rng, 10.0f);
  // Edge cases for bf16's rounding: ties, f16-overflowing magnitudes, subnormals, inf, NaN.
  const float edges[] = {1.0f + 1.0f / 256.0f,
                         1.0f + 3.0f / 256.0f,
                         1e30f,
                         -7e4f,
                         1e-40f,
                         -1e-40f,
                         INFINITY,
                         -INFINITY,
                         0.0f,
                         -0.0f};
  for (size_t i = 0; i < std::size(edges); ++i) x[40 + 3 * i] = edges[i];
  for (const DType type : {DType::kF16, DType::kBF16}) {
    for (const OpsTable* t : supported_tables()) {
      std::vector<uint16_t> out(4 * 37, 0xffff);
      t->store_kv(x.data(), 40, 4, 35, out.data(), 37, type);
      for (int r = 0; r < 4; ++r) {
        for (int i = 0; i < 35; ++i) {
          EXPECT_EQ(out[r * 37 + i], f32_to_kv(x[r * 40 + i], type))
              << t->level << " " << kv_type_name(type) << " x " << x[r * 40 + i];
        }
        EXPECT_EQ(out[r * 37 + 35], 0xffff);
      }
    }
  }
}

// Dense causal attention in double, as the reference for the flash-style kernel.
// The cache holds s.kv_type: queries (and, with round_p, probabilities) are rounded to it, as the
// kernels do.
void reference_attention(const std::vector<float>& q, const AttentionSeq& seq,
                         const AttentionShape& s, std::vector<double>& out, bool round_p = false) {
  const DType kv = s.kv_type;
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
          dot += double(round_kv(q[(seq.first_row + i) * s.q_stride + h * s.head_dim + d], kv)) *
                 kv_to_f32(seq.kv.k[j * seq.kv.row_stride + kvh * s.head_dim + d], kv);
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
              round_p ? round_kv(static_cast<float>(scores[j] / sum), kv) : scores[j] / sum;
          acc += p * kv_to_f32(seq.kv.v[j * seq.kv.row_stride + kvh * s.head_dim + d], kv);
        }
        out[(seq.first_row + i) * s.out_stride + h * s.head_dim + d] = acc;
      }
    }
  }
}

// The cases of the attention tests: a prefill from 0, a chunk continuing a cached prefix, and two
// decodes (one crossing a block); keys and values as f32 (kf, vf) and in the cache type.
struct AttentionCases {
  static constexpr int kHeads = 9, kKvHeads = 3, kHeadDim = 64;
  static constexpr int64_t kKvStride = kKvHeads * kHeadDim;
  AttentionShape shape{kHeads,           kKvHeads,
                       kHeadDim,         kHeads* kHeadDim + 2 * kKvStride,
                       kHeads* kHeadDim, 1.0f / std::sqrt(float(kHeadDim))};
  std::vector<std::vector<float>> kf, vf;
  std::vector<std::vector<uint16_t>> ks, vs;
  std::vector<AttentionSeq> seqs;
  std::vector<float> q;
  int64_t rows = 0;

  explicit AttentionCases(std::mt19937& rng) {
    struct Case {
      int first_pos, num_queries;
    };
    for (const Case c : {Case{0, 37}, Case{100, 70}, Case{64, 1}, Case{300, 1}}) {
      const int len = c.first_pos + c.num_queries;
      kf.push_back(random_vector(len * kKvStride, rng, 2.0f));
      vf.push_back(random_vector(len * kKvStride, rng));
      AttentionSeq seq;
      seq.first_row = rows;
      seq.num_queries = c.num_queries;
      seq.first_pos = c.first_pos;
      seq.kv.row_stride = kKvStride;
      seqs.push_back(seq);
      rows += c.num_queries;
    }
    ks.resize(kf.size());
    vs.resize(vf.size());
    q = random_vector(rows * shape.q_stride, rng, 2.0f);
  }
  // Stores the keys and values in `type` and points the views at them.
  void store(DType type) {
    shape.kv_type = type;
    for (size_t s = 0; s < seqs.size(); ++s) {
      ks[s].resize(kf[s].size());
      vs[s].resize(vf[s].size());
      for (size_t i = 0; i < kf[s].size(); ++i) {
        ks[s][i] = f32_to_kv(kf[s][i], type);
        vs[s][i] = f32_to_kv(vf[s][i], type);
      }
      seqs[s].kv.k = ks[s].data();
      seqs[s].kv.v = vs[s].data();
    }
  }
};

TEST(Ops, AttentionMatchesDenseReference) {
  std::mt19937 rng(5);
  AttentionCases c(rng);
  AttentionShape& shape = c.shape;
  for (const DType type : {DType::kF16, DType::kBF16}) {
    c.store(type);
    for (bool round_p : {false, true}) {
      shape.round_probabilities_f16 = round_p;
      std::vector<double> expected(c.rows * shape.out_stride);
      for (const auto& seq : c.seqs) reference_attention(c.q, seq, shape, expected, round_p);

      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        for (const OpsTable* t : supported_tables()) {
          std::vector<float> out(c.rows * shape.out_stride, NAN);
          t->attention(pool, c.q.data(), c.seqs, shape, out.data());
          for (int64_t i = 0; i < c.rows * shape.out_stride; ++i) {
            // With rounding, a probability within an ulp of a rounding boundary may round the
            // other way (our exp differs from std::exp by an ulp or two): one ulp of p (f16:
            // 2^-11, bf16: 2^-8 relative) times |v|.
            const double tol = round_p ? (type == DType::kBF16 ? 4e-3 : 5e-4) : 2e-5;
            ASSERT_NEAR(out[i], expected[i], tol * std::max(1.0, std::abs(expected[i])))
                << t->level << " " << kv_type_name(type) << " threads " << threads << " element "
                << i << " round_p " << round_p;
          }
        }
      }
    }
  }
}

// What the cache type costs: attention over an f16 or bf16 cache against attention in double
// over the f32 keys and values (nothing rounded), as the error normalized by the output's RMS.
// Prints the table (docs/benchmarks.md, "bf16 KV"); bounds: f16 keeps 11 bits, bf16 8.
TEST(Ops, KvTypeErrorAgainstFloatAttention) {
  std::mt19937 rng(7);
  AttentionCases c(rng);
  AttentionShape exact_shape = c.shape;
  // The f32 reference: the same reference routine over f32 rows, with no rounding of q or p.
  std::vector<double> exact(c.rows * exact_shape.out_stride);
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const AttentionSeq& seq = c.seqs[s];
    const int group = exact_shape.heads / exact_shape.kv_heads;
    for (int i = 0; i < seq.num_queries; ++i) {
      const int pos = seq.first_pos + i;
      for (int h = 0; h < exact_shape.heads; ++h) {
        const int64_t kv_off = (h / group) * exact_shape.head_dim;
        std::vector<double> scores(pos + 1);
        double max_score = -1e300, sum = 0;
        for (int j = 0; j <= pos; ++j) {
          double dot = 0;
          for (int d = 0; d < exact_shape.head_dim; ++d) {
            dot += double(c.q[(seq.first_row + i) * exact_shape.q_stride +
                              h * exact_shape.head_dim + d]) *
                   c.kf[s][j * seq.kv.row_stride + kv_off + d];
          }
          scores[j] = dot * exact_shape.scale;
          max_score = std::max(max_score, scores[j]);
        }
        for (auto& v : scores) sum += (v = std::exp(v - max_score));
        for (int d = 0; d < exact_shape.head_dim; ++d) {
          double acc = 0;
          for (int j = 0; j <= pos; ++j)
            acc += scores[j] / sum * c.vf[s][j * seq.kv.row_stride + kv_off + d];
          exact[(seq.first_row + i) * exact_shape.out_stride + h * exact_shape.head_dim + d] = acc;
        }
      }
    }
  }
  double rms = 0;
  for (double x : exact) rms += x * x;
  rms = std::sqrt(rms / static_cast<double>(exact.size()));

  const OpsTable& ops = ops_for(CpuFeatures::detect());
  ThreadPool pool(2);
  double mean_errors[2][2] = {};  // [bf16][round_p]
  std::printf("| cache | round p | max abs error / rms | mean abs error / rms |\n");
  std::printf("|---|---|---|---|\n");
  for (const DType type : {DType::kF16, DType::kBF16}) {
    c.store(type);
    for (bool round_p : {false, true}) {
      c.shape.round_probabilities_f16 = round_p;
      std::vector<float> out(c.rows * c.shape.out_stride, NAN);
      ops.attention(pool, c.q.data(), c.seqs, c.shape, out.data());
      double max_err = 0, mean_err = 0;
      for (size_t i = 0; i < exact.size(); ++i) {
        const double e = std::abs(out[i] - exact[i]);
        max_err = std::max(max_err, e);
        mean_err += e;
      }
      max_err /= rms;
      mean_err /= rms * static_cast<double>(exact.size());
      std::printf("| %s | %s | %.2e | %.2e |\n", std::string(kv_type_name(type)).c_str(),
                  round_p ? "yes" : "no", max_err, mean_err);
      // Keys, values and queries rounded to 11 (f16) or 8 (bf16) significant bits. Measured
      // (seed 7): f16 5.1e-3 max / 3.9e-4 mean, bf16 4.8e-2 / 3.2e-3.
      const double bound = type == DType::kBF16 ? 8e-2 : 1e-2;
      EXPECT_LT(max_err, bound) << kv_type_name(type) << " round_p " << round_p;
      EXPECT_LT(mean_err, bound / 10) << kv_type_name(type) << " round_p " << round_p;
      mean_errors[type == DType::kBF16 ? 1 : 0][round_p ? 1 : 0] = mean_err;
    }
  }
  // bf16 loses 3 bits of mantissa against f16: about 2^3 times the error, not more.
  for (int round_p = 0; round_p < 2; ++round_p) {
    const double ratio = mean_errors[1][round_p] / mean_errors[0][round_p];
    EXPECT_GT(ratio, 4.0) << "round_p " << round_p;
    EXPECT_LT(ratio, 16.0) << "round_p " << round_p;
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
