// Attention over every KvView kind (contiguous, paged, ring), its log-sum-exp output and
// LightTransfer's lazy ratio, for every ISA build of the CPU ops and 1 and 2 threads, against
// dense double-precision references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/dtype.h"

namespace lightserve::kernels::cpu {
namespace {

constexpr int kHeads = 9, kKvHeads = 3, kHeadDim = 64;
constexpr int64_t kKvWidth = kKvHeads * kHeadDim;
constexpr int64_t kUnbounded = int64_t{1} << 40;

std::vector<const OpsTable*> supported_tables() {
  const CpuFeatures f = CpuFeatures::detect();
  std::vector<const OpsTable*> tables = {&kOpsGeneric};
  if (f.avx2) tables.push_back(&kOpsAvx2);
  if (f.avx512) tables.push_back(&kOpsAvx512);
  if (f.avx512 && f.avx512_bf16) tables.push_back(&kOpsAvx512Bf16);
  return tables;
}

AttentionShape test_shape() {
  return AttentionShape{kHeads,
                        kKvHeads,
                        kHeadDim,
                        kHeads * kHeadDim + 2 * kKvWidth,
                        kHeads * kHeadDim,
                        1.0f / std::sqrt(float(kHeadDim))};
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

// The keys and values of n tokens, token-major (kKvWidth values a row), in f16.
struct DenseKv {
  int n = 0;
  std::vector<uint16_t> k, v;

  DenseKv(int tokens, std::mt19937& rng) : n(tokens), k(tokens * kKvWidth), v(tokens * kKvWidth) {
    const auto kf = random_vector(k.size(), rng, 2.0f);
    const auto vf = random_vector(v.size(), rng);
    for (size_t i = 0; i < k.size(); ++i) {
      k[i] = fp32_to_fp16(kf[i]);
      v[i] = fp32_to_fp16(vf[i]);
    }
  }
  KvView contiguous() const {
    KvView view;
    view.k = k.data();
    view.v = v.data();
    view.row_stride = kKvWidth;
    return view;
  }
};

// The same tokens scattered into shuffled blocks of an arena (padded rows and blocks).
struct PagedKv {
  static constexpr int kBlockSize = 16;
  static constexpr int64_t kRowStride = kKvWidth + 8;
  static constexpr int64_t kBlockStride = kBlockSize * kRowStride + 24;
  std::vector<uint16_t> k, v;
  std::vector<int32_t> table;

  PagedKv(const DenseKv& dense, std::mt19937& rng)
      : PagedKv(
            dense, dense.n, [](int t) { return t; }, rng) {}
  // Token t of `dense` goes to row row_of(t) of `rows`, paged over shuffled blocks of an arena
  // with some blocks that belong to nobody.
  template <typename RowOf>
  PagedKv(const DenseKv& dense, int rows, RowOf row_of, std::mt19937& rng) {
    const int num_blocks = (rows + kBlockSize - 1) / kBlockSize;
    std::vector<int32_t> ids(num_blocks + 3);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + num_blocks);
    k.assign(ids.size() * kBlockStride, fp32_to_fp16(NAN));
    v.assign(ids.size() * kBlockStride, fp32_to_fp16(NAN));
    for (int t = 0; t < dense.n; ++t) {
      const int r = row_of(t);
      const int64_t row = table[r / kBlockSize] * kBlockStride + (r % kBlockSize) * kRowStride;
      std::copy_n(dense.k.begin() + t * kKvWidth, kKvWidth, k.begin() + row);
      std::copy_n(dense.v.begin() + t * kKvWidth, kKvWidth, v.begin() + row);
    }
  }
  KvView view() const {
    KvView view;
    view.kind = KvView::Kind::kPaged;
    view.k = k.data();
    view.v = v.data();
    view.row_stride = kRowStride;
    view.block_table = table.data();
    view.block_size = kBlockSize;
    view.block_stride = kBlockStride;
    return view;
  }
};

// A lazy layer's slot holding the tokens of `dense`, written in order, so that the window slides
// and older tokens are overwritten.
struct RingKv {
  static constexpr int64_t kRowStride = kKvWidth + 4;
  int sink, window;
  std::vector<uint16_t> k, v;

  RingKv(const DenseKv& dense, int sink_tokens, int window_tokens)
      : sink(sink_tokens), window(window_tokens) {
    k.assign((sink + window) * kRowStride, fp32_to_fp16(NAN));
    v.assign((sink + window) * kRowStride, fp32_to_fp16(NAN));
    for (int t = 0; t < dense.n; ++t) {
      const int64_t row = (t < sink ? t : sink + (t - sink) % window) * kRowStride;
      std::copy_n(dense.k.begin() + t * kKvWidth, kKvWidth, k.begin() + row);
      std::copy_n(dense.v.begin() + t * kKvWidth, kKvWidth, v.begin() + row);
    }
  }
  KvView view() const {
    KvView view;
    view.kind = KvView::Kind::kRing;
    view.k = k.data();
    view.v = v.data();
    view.row_stride = kRowStride;
    view.sink = sink;
    view.window = window;
    return view;
  }
};

// The same ring paged as the KV arena pages a lazy layer: ring row r in page table[r / 16] at row
// r % 16, the pages shuffled in an arena with spare ones (a window that is not a multiple of the
// page leaves the last page partly unused).
struct PagedRingKv : PagedKv {
  int sink, window;

  PagedRingKv(const DenseKv& dense, int sink_tokens, int window_tokens, std::mt19937& rng)
      : PagedKv(
            dense, std::min(dense.n, sink_tokens + window_tokens),
            [=](int t) {
              return t < sink_tokens ? t : sink_tokens + (t - sink_tokens) % window_tokens;
            },
            rng),
        sink(sink_tokens),
        window(window_tokens) {}
  KvView view() const {
    KvView view = PagedKv::view();
    view.kind = KvView::Kind::kRing;
    view.sink = sink;
    view.window = window;
    return view;
  }
};

// Dense attention in double for queries [first_row, first_row + num_queries) at positions from
// first_pos, over keys t ≤ p with t < sink or t > p − window. Writes output rows and the
// log-sum-exp [num_queries × heads] of the scaled scores.
void reference_attention(const std::vector<float>& q, int64_t first_row, int num_queries,
                         int first_pos, const DenseKv& kv, int sink, int64_t window,
                         const AttentionShape& s, std::vector<double>& out,
                         std::vector<double>& lse) {
  const int group = s.heads / s.kv_heads;
  lse.assign(static_cast<size_t>(num_queries) * s.heads, 0.0);
  for (int i = 0; i < num_queries; ++i) {
    const int pos = first_pos + i;
    for (int h = 0; h < s.heads; ++h) {
      const int64_t kv_offset = static_cast<int64_t>(h / group) * s.head_dim;
      std::vector<int> keys;
      for (int t = 0; t <= pos; ++t) {
        if (t < sink || t > pos - window) keys.push_back(t);
      }
      std::vector<double> scores;
      double max_score = -1e300;
      for (int t : keys) {
        double dot = 0;
        for (int d = 0; d < s.head_dim; ++d) {
          dot += double(round_f16(q[(first_row + i) * s.q_stride + h * s.head_dim + d])) *
                 fp16_to_fp32(kv.k[t * kKvWidth + kv_offset + d]);
        }
        scores.push_back(dot * s.scale);
        max_score = std::max(max_score, scores.back());
      }
      double sum = 0;
      for (auto& x : scores) sum += (x = std::exp(x - max_score));
      lse[static_cast<size_t>(i) * s.heads + h] = max_score + std::log(sum);
      for (int d = 0; d < s.head_dim; ++d) {
        double acc = 0;
        for (size_t j = 0; j < keys.size(); ++j) {
          acc += scores[j] / sum * fp16_to_fp32(kv.v[keys[j] * kKvWidth + kv_offset + d]);
        }
        out[(first_row + i) * s.out_stride + h * s.head_dim + d] = acc;
      }
    }
  }
}

void expect_close(const std::vector<float>& got, const std::vector<double>& expected, double rel,
                  const std::string& what) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], expected[i], rel * std::max(1.0, std::abs(expected[i])))
        << what << " element " << i;
  }
}

TEST(Attention, PagedEqualsContiguousBitForBit) {
  std::mt19937 rng(11);
  const AttentionShape shape = test_shape();
  // Prefill, a chunk after a cached prefix, decodes; lengths not multiples of the block size.
  struct Case {
    int first_pos, num_queries;
  };
  const std::vector<Case> cases = {{0, 37}, {100, 70}, {64, 1}, {300, 1}, {15, 1}, {0, 1}};
  std::vector<DenseKv> dense;
  std::vector<PagedKv> paged;
  std::vector<AttentionSeq> contiguous_seqs, paged_seqs;
  int64_t rows = 0;
  for (const Case& c : cases) dense.emplace_back(c.first_pos + c.num_queries, rng);
  for (const DenseKv& d : dense) paged.emplace_back(d, rng);
  for (size_t i = 0; i < cases.size(); ++i) {
    AttentionSeq seq;
    seq.first_row = rows;
    seq.num_queries = cases[i].num_queries;
    seq.first_pos = cases[i].first_pos;
    seq.kv = dense[i].contiguous();
    contiguous_seqs.push_back(seq);
    seq.kv = paged[i].view();
    paged_seqs.push_back(seq);
    rows += cases[i].num_queries;
  }
  const auto q = random_vector(rows * shape.q_stride, rng, 2.0f);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const OpsTable* t : supported_tables()) {
      std::vector<float> expected(rows * shape.out_stride, NAN), got(rows * shape.out_stride, NAN);
      std::vector<float> expected_lse(rows * kHeads, NAN), got_lse(rows * kHeads, NAN);
      for (size_t i = 0; i < cases.size(); ++i) {
        contiguous_seqs[i].lse = expected_lse.data() + contiguous_seqs[i].first_row * kHeads;
        paged_seqs[i].lse = got_lse.data() + paged_seqs[i].first_row * kHeads;
      }
      t->attention(pool, q.data(), contiguous_seqs, shape, expected.data());
      t->attention(pool, q.data(), paged_seqs, shape, got.data());
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i], expected[i]) << t->level << " threads " << threads << " element " << i;
      }
      for (size_t i = 0; i < got_lse.size(); ++i) ASSERT_EQ(got_lse[i], expected_lse[i]);
    }
  }
}

TEST(Attention, ContiguousLseMatchesReference) {
  std::mt19937 rng(12);
  const AttentionShape shape = test_shape();
  const DenseKv kv(150, rng);
  AttentionSeq seq;
  seq.num_queries = 50;  // a chunk after a cached prefix of 100
  seq.first_pos = 100;
  seq.kv = kv.contiguous();
  const auto q = random_vector(seq.num_queries * shape.q_stride, rng, 2.0f);
  std::vector<double> expected(seq.num_queries * shape.out_stride), expected_lse;
  reference_attention(q, 0, seq.num_queries, seq.first_pos, kv, 0, kUnbounded, shape, expected,
                      expected_lse);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const OpsTable* t : supported_tables()) {
      std::vector<float> out(expected.size(), NAN), lse(expected_lse.size(), NAN);
      seq.lse = lse.data();
      t->attention(pool, q.data(), {&seq, 1}, shape, out.data());
      expect_close(out, expected, 2e-5, t->level);
      expect_close(lse, expected_lse, 1e-5, std::string(t->level) + " lse");
    }
  }
}

// Decode on a ring (sink + window slot) equals dense attention under the streaming mask, before
// the ring wraps, when it is exactly full, one token after, and after many wraps.
TEST(Attention, RingEqualsDenseUnderStreamingMask) {
  std::mt19937 rng(13);
  const AttentionShape shape = test_shape();
  for (int sink : {0, 1, 4}) {
    for (int window : {8, 20, 64, 100}) {
      const int capacity = sink + window;
      std::vector<int> lengths = {capacity, capacity + 1, 5 * window + 7 + sink, 1000};
      if (capacity > 3) lengths.push_back(capacity - 3);
      std::vector<DenseKv> dense;
      std::vector<RingKv> rings;
      for (int n : lengths) dense.emplace_back(n, rng);
      for (const DenseKv& d : dense) rings.emplace_back(d, sink, window);
      std::vector<AttentionSeq> seqs;
      const int64_t rows = static_cast<int64_t>(lengths.size());
      const auto q = random_vector(rows * shape.q_stride, rng, 2.0f);
      std::vector<double> expected(rows * shape.out_stride), expected_lse;
      std::vector<double> all_lse;
      for (int64_t i = 0; i < rows; ++i) {
        AttentionSeq seq;
        seq.first_row = i;
        seq.num_queries = 1;
        seq.first_pos = lengths[i] - 1;
        seq.kv = rings[i].view();
        seqs.push_back(seq);
        reference_attention(q, i, 1, seq.first_pos, dense[i], sink, window, shape, expected,
                            expected_lse);
        all_lse.insert(all_lse.end(), expected_lse.begin(), expected_lse.end());
      }
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        for (const OpsTable* t : supported_tables()) {
          std::vector<float> out(expected.size(), NAN), lse(all_lse.size(), NAN);
          for (int64_t i = 0; i < rows; ++i) seqs[i].lse = lse.data() + i * kHeads;
          t->attention(pool, q.data(), seqs, shape, out.data());
          const std::string what = std::string(t->level) + " sink " + std::to_string(sink) +
                                   " window " + std::to_string(window);
          expect_close(out, expected, 2e-5, what);
          expect_close(lse, all_lse, 1e-5, what + " lse");
        }
      }
    }
  }
}

// A lazy layer read through its page table (a paged ring) gives bit for bit what the contiguous
// ring gives: before it fills, exactly full, one past, after many wraps, and a chunk of queries
// before it wraps.
TEST(Attention, PagedRingEqualsRingBitForBit) {
  std::mt19937 rng(16);
  const AttentionShape shape = test_shape();
  for (int sink : {0, 4}) {
    for (int window : {20, 100, 1020}) {
      const int capacity = sink + window;
      struct Case {
        int n, num_queries;
      };
      std::vector<Case> cases = {{1, 1},        {17, 1},           {capacity - 1, 1},
                                 {capacity, 1}, {capacity + 1, 1}, {3 * window + 7, 1}};
      if (capacity > 40) cases.push_back({capacity - 5, 30});
      std::vector<DenseKv> dense;
      std::vector<RingKv> rings;
      std::vector<PagedRingKv> paged;
      for (const Case& c : cases) dense.emplace_back(c.n, rng);
      for (const DenseKv& d : dense) {
        rings.emplace_back(d, sink, window);
        paged.emplace_back(d, sink, window, rng);
      }
      std::vector<AttentionSeq> ring_seqs, paged_seqs;
      int64_t rows = 0;
      for (size_t i = 0; i < cases.size(); ++i) {
        AttentionSeq seq;
        seq.first_row = rows;
        seq.num_queries = cases[i].num_queries;
        seq.first_pos = cases[i].n - cases[i].num_queries;
        seq.kv = rings[i].view();
        ring_seqs.push_back(seq);
        seq.kv = paged[i].view();
        paged_seqs.push_back(seq);
        rows += seq.num_queries;
      }
      const auto q = random_vector(rows * shape.q_stride, rng, 2.0f);
      ThreadPool pool(2);
      for (const OpsTable* t : supported_tables()) {
        std::vector<float> expected(rows * shape.out_stride, NAN), got(expected.size(), NAN);
        std::vector<float> expected_lse(rows * kHeads, NAN), got_lse(expected_lse.size(), NAN);
        for (size_t i = 0; i < cases.size(); ++i) {
          ring_seqs[i].lse = expected_lse.data() + ring_seqs[i].first_row * kHeads;
          paged_seqs[i].lse = got_lse.data() + paged_seqs[i].first_row * kHeads;
        }
        t->attention(pool, q.data(), ring_seqs, shape, expected.data());
        t->attention(pool, q.data(), paged_seqs, shape, got.data());
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i], expected[i])
              << t->level << " sink " << sink << " window " << window << " element " << i;
        }
        for (size_t i = 0; i < got_lse.size(); ++i) ASSERT_EQ(got_lse[i], expected_lse[i]);
      }
    }
  }
}

// A ring that has not wrapped holds every token, so it can also take a chunk of queries.
TEST(Attention, RingTakesSeveralQueriesBeforeItWraps) {
  std::mt19937 rng(14);
  const AttentionShape shape = test_shape();
  const int sink = 4, window = 100, n = 104;
  const DenseKv kv(n, rng);
  const RingKv ring(kv, sink, window);
  AttentionSeq seq;
  seq.num_queries = 40;
  seq.first_pos = n - seq.num_queries;
  seq.kv = ring.view();
  const auto q = random_vector(seq.num_queries * shape.q_stride, rng, 2.0f);
  std::vector<double> expected(seq.num_queries * shape.out_stride), expected_lse;
  reference_attention(q, 0, seq.num_queries, seq.first_pos, kv, sink, window, shape, expected,
                      expected_lse);
  ThreadPool pool(2);
  for (const OpsTable* t : supported_tables()) {
    std::vector<float> out(expected.size(), NAN);
    t->attention(pool, q.data(), {&seq, 1}, shape, out.data());
    expect_close(out, expected, 2e-5, t->level);
  }
}

TEST(Attention, RingWithWindowCoveringAllTokensEqualsCausal) {
  std::mt19937 rng(15);
  const AttentionShape shape = test_shape();
  for (int n : {1, 63, 64, 65, 300}) {
    const DenseKv kv(n, rng);
    const RingKv ring(kv, 4, n + 10);
    AttentionSeq full, streaming;
    full.num_queries = streaming.num_queries = 1;
    full.first_pos = streaming.first_pos = n - 1;
    full.kv = kv.contiguous();
    streaming.kv = ring.view();
    const auto q = random_vector(shape.q_stride, rng, 2.0f);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      for (const OpsTable* t : supported_tables()) {
        std::vector<float> expected(shape.out_stride), got(shape.out_stride);
        t->attention(pool, q.data(), {&full, 1}, shape, expected.data());
        t->attention(pool, q.data(), {&streaming, 1}, shape, got.data());
        for (int64_t i = 0; i < shape.out_stride; ++i) {
          ASSERT_NEAR(got[i], expected[i], 1e-6 * std::max(1.0f, std::abs(expected[i])))
              << t->level << " n " << n;
        }
      }
    }
  }
}

TEST(Attention, MixedBatchEqualsSeparateCalls) {
  std::mt19937 rng(16);
  const AttentionShape shape = test_shape();
  const DenseKv a(90, rng), b(200, rng), c(500, rng);
  const PagedKv paged(b, rng);
  const RingKv ring(c, 4, 20);
  std::vector<AttentionSeq> seqs(4);
  seqs[0].num_queries = 30;  // a prefill chunk on contiguous scratch
  seqs[0].first_pos = 60;
  seqs[0].kv = a.contiguous();
  seqs[1].first_row = 30;
  seqs[1].num_queries = 1;
  seqs[1].first_pos = 199;
  seqs[1].kv = paged.view();
  seqs[2].first_row = 31;
  seqs[2].num_queries = 1;
  seqs[2].first_pos = 499;
  seqs[2].kv = ring.view();
  seqs[3].first_row = 32;  // a second decode on the same paged cache, one token earlier
  seqs[3].num_queries = 1;
  seqs[3].first_pos = 198;
  seqs[3].kv = paged.view();
  const int64_t rows = 33;
  const auto q = random_vector(rows * shape.q_stride, rng, 2.0f);
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    for (const OpsTable* t : supported_tables()) {
      std::vector<float> batched(rows * shape.out_stride, NAN), separate(batched.size(), NAN);
      std::vector<float> batched_lse(rows * kHeads, NAN), separate_lse(rows * kHeads, NAN);
      auto with_lse = seqs;
      for (auto& s : with_lse) s.lse = batched_lse.data() + s.first_row * kHeads;
      t->attention(pool, q.data(), with_lse, shape, batched.data());
      for (auto& s : with_lse) {
        s.lse = separate_lse.data() + s.first_row * kHeads;
        t->attention(pool, q.data(), {&s, 1}, shape, separate.data());
      }
      for (size_t i = 0; i < batched.size(); ++i) ASSERT_EQ(batched[i], separate[i]) << i;
      for (size_t i = 0; i < batched_lse.size(); ++i) ASSERT_EQ(batched_lse[i], separate_lse[i]);
    }
  }
}

// Decode tiles (at most 4 query rows) read scores and values straight from the cache
// (attention_decode_impl.inc), prefill tiles through f32 copies of each key block; both must give
// the same bits. The last c queries of a causal prefill, run as their own call (a tile of
// c · group rows), equal the prefill's rows: f16 and bf16 caches, llama.cpp's rounded
// probabilities on and off, 1 to 4 query heads per KV head, head_dim 64 and 80, key counts around
// the 64-key blocks, contiguous and paged.
TEST(Attention, DecodeTilesEqualPrefillRowsBitForBit) {
  std::mt19937 rng(21);
  struct Config {
    int group, head_dim;
  };
  for (const Config cfg :
       {Config{3, 64}, Config{1, 64}, Config{4, 64}, Config{3, 80}, Config{2, 80}}) {
    constexpr int kKv = 2;
    AttentionShape shape;
    shape.heads = cfg.group * kKv;
    shape.kv_heads = kKv;
    shape.head_dim = cfg.head_dim;
    shape.q_stride = static_cast<int64_t>(shape.heads) * cfg.head_dim;
    shape.out_stride = shape.q_stride;
    shape.scale = 1.0f / std::sqrt(float(cfg.head_dim));
    const int64_t width = static_cast<int64_t>(kKv) * cfg.head_dim;
    for (const int n :
         {2, 15, 64, 66, 130, 200}) {  // n % 32 != 1: the prefill's last tile has ≥ 2 queries
      const auto kf = random_vector(n * width, rng, 2.0f), vf = random_vector(n * width, rng);
      const auto q = random_vector(n * shape.q_stride, rng, 2.0f);
      for (const DType type : {DType::kF16, DType::kBF16}) {
        shape.kv_type = type;
        auto to16 = [&](float x) {
          return type == DType::kF16 ? fp32_to_fp16(x) : fp32_to_bf16(x);
        };
        std::vector<uint16_t> k(kf.size()), v(vf.size());
        for (size_t i = 0; i < k.size(); ++i) {
          k[i] = to16(kf[i]);
          v[i] = to16(vf[i]);
        }
        // The same rows paged: 16-token blocks in reverse order, rows padded with NaN.
        constexpr int kBlock = 16;
        const int64_t row_stride = width + 8, block_stride = kBlock * row_stride;
        const int blocks = (n + kBlock - 1) / kBlock;
        std::vector<uint16_t> pk(blocks * block_stride, fp32_to_fp16(NAN)), pv(pk);
        std::vector<int32_t> table(blocks);
        for (int b = 0; b < blocks; ++b) table[b] = blocks - 1 - b;
        for (int t = 0; t < n; ++t) {
          const int64_t row = table[t / kBlock] * block_stride + (t % kBlock) * row_stride;
          std::copy_n(k.begin() + t * width, width, pk.begin() + row);
          std::copy_n(v.begin() + t * width, width, pv.begin() + row);
        }
        KvView contiguous;
        contiguous.k = k.data();
        contiguous.v = v.data();
        contiguous.row_stride = width;
        KvView paged;
        paged.kind = KvView::Kind::kPaged;
        paged.k = pk.data();
        paged.v = pv.data();
        paged.row_stride = row_stride;
        paged.block_table = table.data();
        paged.block_size = kBlock;
        paged.block_stride = block_stride;
        for (const bool round : {false, true}) {
          shape.round_probabilities_f16 = round;
          ThreadPool pool(1);
          for (const OpsTable* t : supported_tables()) {
            AttentionSeq prefill;
            prefill.num_queries = n;
            prefill.kv = contiguous;
            std::vector<float> expected(n * shape.out_stride, NAN),
                expected_lse(n * shape.heads, NAN);
            prefill.lse = expected_lse.data();
            t->attention(pool, q.data(), {&prefill, 1}, shape, expected.data());
            for (const int c : {1, 2, 4}) {
              if (c > n) continue;
              for (const KvView& view : {contiguous, paged}) {
                AttentionSeq tail;
                tail.first_row = n - c;
                tail.num_queries = c;
                tail.first_pos = n - c;
                tail.kv = view;
                std::vector<float> got(expected.size(), NAN), got_lse(expected_lse.size(), NAN);
                tail.lse = got_lse.data() + (n - c) * shape.heads;
                t->attention(pool, q.data(), {&tail, 1}, shape, got.data());
                for (int64_t i = (n - c) * shape.out_stride; i < n * shape.out_stride; ++i) {
                  ASSERT_EQ(got[i], expected[i])
                      << t->level << " group " << cfg.group << " hd " << cfg.head_dim << " n " << n
                      << " bf16 " << (type == DType::kBF16) << " round " << round << " c " << c
                      << " paged " << (view.kind == KvView::Kind::kPaged) << " element " << i;
                }
                for (int64_t i = (n - c) * shape.heads; i < n * shape.heads; ++i) {
                  ASSERT_EQ(got_lse[i], expected_lse[i]) << t->level << " n " << n << " c " << c;
                }
              }
            }
          }
        }
      }
    }
  }
}

// Brute force (docs/design.md §4): full causal softmax over all keys in double, then per query
// head the mass on [0, sink) ∪ [n − window, n) (keys ≤ the query), averaged over the last w_last
// queries.
std::vector<double> brute_force_head_ratios(const std::vector<float>& q, const DenseKv& kv,
                                            int w_last, int sink, int window,
                                            const AttentionShape& s) {
  const int n = kv.n, group = s.heads / s.kv_heads;
  const int first = std::max(0, n - w_last);
  std::vector<double> heads(static_cast<size_t>(s.heads), 0.0);
  for (int qi = first; qi < n; ++qi) {
    for (int h = 0; h < s.heads; ++h) {
      std::vector<double> p(qi + 1);
      double max_score = -1e300;
      for (int t = 0; t <= qi; ++t) {
        double dot = 0;
        for (int d = 0; d < s.head_dim; ++d) {
          dot += double(round_f16(q[qi * s.q_stride + h * s.head_dim + d])) *
                 fp16_to_fp32(kv.k[t * kKvWidth + (h / group) * s.head_dim + d]);
        }
        p[t] = dot * s.scale;
        max_score = std::max(max_score, p[t]);
      }
      double sum = 0, kept = 0;
      for (auto& x : p) sum += (x = std::exp(x - max_score));
      for (int t = 0; t <= qi; ++t) {
        if (t < sink || t >= n - window) kept += p[t];
      }
      heads[h] += kept / sum / (n - first);
    }
  }
  return heads;
}

// The paper's score: the mean over the last w_last queries and all query heads.
double brute_force_lazy_ratio(const std::vector<float>& q, const DenseKv& kv, int w_last, int sink,
                              int window, const AttentionShape& s) {
  const std::vector<double> heads = brute_force_head_ratios(q, kv, w_last, sink, window, s);
  return std::accumulate(heads.begin(), heads.end(), 0.0) / s.heads;
}

TEST(LazyRatio, MatchesBruteForceOnEveryViewKindAndScore) {
  std::mt19937 rng(17);
  const AttentionShape shape = test_shape();
  const int w_last = 16;
  struct Case {
    int n, sink, window;
  };
  const std::vector<Case> cases = {{1, 4, 8},      {5, 4, 8},     {15, 0, 8},   {100, 4, 20},
                                   {100, 0, 20},   {300, 4, 100}, {300, 1, 64}, {1100, 4, 1020},
                                   {1100, 0, 100}, {40, 4, 36},   {40, 4, 100}, {700, 4, 8}};
  ThreadPool pool(2);
  for (const Case& c : cases) {
    const DenseKv kv(c.n, rng);
    // Scale the queries so that attention is peaked enough for ratios away from 0 and 1.
    const auto q = random_vector(static_cast<size_t>(c.n) * shape.q_stride, rng, 3.0f);
    const std::vector<double> heads =
        brute_force_head_ratios(q, kv, w_last, c.sink, c.window, shape);
    const std::vector<double> last_heads =
        brute_force_head_ratios(q, kv, 1, c.sink, c.window, shape);
    const double mean = std::accumulate(heads.begin(), heads.end(), 0.0) / shape.heads;
    const double head_min = *std::min_element(heads.begin(), heads.end());
    const double last_min = *std::min_element(last_heads.begin(), last_heads.end());
    EXPECT_LE(head_min, mean + 1e-12);
    const PagedKv paged(kv, rng);
    const RingKv ring(kv, c.sink, c.window);
    for (const OpsTable* t : supported_tables()) {
      // The log-sum-exp of the last w_last queries, as the prefill's attention writes it.
      const int first = std::max(0, c.n - w_last);
      std::vector<float> lse(static_cast<size_t>(c.n) * kHeads, NAN);
      std::vector<float> out(static_cast<size_t>(c.n) * shape.out_stride);
      AttentionSeq seq;
      seq.first_row = first;
      seq.num_queries = c.n - first;
      seq.first_pos = first;
      seq.kv = kv.contiguous();
      seq.lse = lse.data() + static_cast<size_t>(first) * kHeads;
      t->attention(pool, q.data(), {&seq, 1}, shape, out.data());

      struct Expect {
        LazyScore score;
        double ratio;
        const std::vector<double>* heads;
      };
      for (const Expect& e :
           {Expect{LazyScore::kMean, mean, &heads}, Expect{LazyScore::kHeadMin, head_min, &heads},
            Expect{LazyScore::kHeadMinLast, last_min, &last_heads}}) {
        const std::string what = std::string(t->level) + " n " + std::to_string(c.n) + " sink " +
                                 std::to_string(c.sink) + " window " + std::to_string(c.window) +
                                 " score " + std::to_string(static_cast<int>(e.score));
        std::vector<float> got_heads(kHeads, NAN);
        const float ratio = t->lazy_ratio(q.data(), lse.data(), kv.contiguous(), c.n, w_last,
                                          c.sink, c.window, shape, e.score, got_heads.data());
        EXPECT_NEAR(ratio, e.ratio, 1e-5) << what;
        for (int h = 0; h < kHeads; ++h) EXPECT_NEAR(got_heads[h], (*e.heads)[h], 1e-5) << what;
        EXPECT_GE(ratio, 0.0f) << what;
        EXPECT_LE(ratio, 1.0f) << what;
        if (c.sink + c.window >= c.n) {
          EXPECT_NEAR(ratio, 1.0, 1e-6) << what;
        }
        // The same keys through the other layouts give the same scores, hence the same ratio.
        EXPECT_EQ(t->lazy_ratio(q.data(), lse.data(), paged.view(), c.n, w_last, c.sink, c.window,
                                shape, e.score, nullptr),
                  ratio)
            << what;
        EXPECT_EQ(t->lazy_ratio(q.data(), lse.data(), ring.view(), c.n, w_last, c.sink, c.window,
                                shape, e.score, nullptr),
                  ratio)
            << what;
      }
    }
  }
}

TEST(LazyRatio, ConcentratedAttentionIsBelowOne) {
  // Queries aligned with a middle key put nearly all mass outside sinks and window.
  std::mt19937 rng(18);
  const AttentionShape shape = test_shape();
  const int n = 200;
  DenseKv kv(n, rng);
  std::vector<float> q(static_cast<size_t>(n) * shape.q_stride);
  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < kHeads; ++h) {
      for (int d = 0; d < kHeadDim; ++d) {
        q[i * shape.q_stride + h * kHeadDim + d] =
            4.0f * fp16_to_fp32(kv.k[100 * kKvWidth + (h / 3) * kHeadDim + d]);
      }
    }
  }
  const double expected = brute_force_lazy_ratio(q, kv, 16, 4, 20, shape);
  ASSERT_LT(expected, 0.01);
  ThreadPool pool(1);
  for (const OpsTable* t : supported_tables()) {
    std::vector<float> lse(static_cast<size_t>(n) * kHeads), out(n * shape.out_stride);
    AttentionSeq seq;
    seq.num_queries = n;
    seq.kv = kv.contiguous();
    seq.lse = lse.data();
    t->attention(pool, q.data(), {&seq, 1}, shape, out.data());
    EXPECT_NEAR(t->lazy_ratio(q.data(), lse.data(), kv.contiguous(), n, 16, 4, 20, shape,
                              LazyScore::kMean, nullptr),
                expected, 1e-5)
        << t->level;
  }
}

TEST(CpuBackend, CopyRowsF16CopiesWidthAndKeepsPadding) {
  auto backend = make_cpu_backend(1);
  std::vector<uint16_t> src(5 * 40), dst(5 * 37, 0xabcd);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint16_t>(i * 7);
  backend->copy_rows_f16(src.data(), 40, 4, 33, dst.data(), 37);
  for (int r = 0; r < 5; ++r) {
    for (int i = 0; i < 37; ++i) {
      const uint16_t expected = r < 4 && i < 33 ? src[r * 40 + i] : 0xabcd;
      ASSERT_EQ(dst[r * 37 + i], expected) << r << " " << i;
    }
  }
  backend->copy_rows_f16(src.data(), 40, 0, 33, dst.data(), 37);  // nothing to do
}

}  // namespace
}  // namespace lightserve::kernels::cpu
