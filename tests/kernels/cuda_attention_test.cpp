// The CUDA backend's attention against the CPU backend (the oracle): contiguous prefill, paged and
// ring (lazy-layer) decode batches, a mixed batch in one call, and the lazy ratio, in the default
// model's attention shape (9 query and 3 KV heads of 64). Every test skips where this build has no
// CUDA backend or no device is visible; each comparison prints its worst error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "tests/kernels/cuda_test_support.h"

namespace lightserve::kernels {
namespace {

using namespace cuda_testing;  // NOLINT: the shared helpers and fixture

// ---- attention ----

AttentionShape model_shape(bool round_probabilities_f16, DType kv_type = DType::kF16) {
  const float scale = 1.0f / std::sqrt(float{kHeadDim});
  AttentionShape shape{
      kHeads, kKvHeads, kHeadDim, kQStride, kOutStride, scale, round_probabilities_f16};
  shape.kv_type = kv_type;
  return shape;
}

uint16_t to_kv(float x, DType type) {
  return type == DType::kBF16 ? fp32_to_bf16(x) : fp32_to_fp16(x);
}

// The keys and values of n tokens, token-major, in the cache type (f16 or bf16): keys σ 2
// (peaked attention), values σ 1.
struct Tokens {
  int n = 0;
  DType type = DType::kF16;
  std::vector<uint16_t> k, v;

  Tokens(int tokens, std::mt19937& rng, DType kv_type = DType::kF16) : n(tokens), type(kv_type) {
    for (float x : random_normal(n * kKvWidth, rng, 2.0f)) k.push_back(to_kv(x, type));
    for (float x : random_normal(n * kKvWidth, rng)) v.push_back(to_kv(x, type));
  }
};

// One sequence's cache in one layout, on the host (for the CPU) and mirrored on the device. NaN
// wherever no token is (row padding, spare rows, unused blocks), so that a read outside the
// attended keys shows in the output.
struct Cache {
  KvView layout;  // kind, strides, block size, sink and window
  DType type;     // of the values
  std::vector<uint16_t> k, v;
  std::vector<int32_t> block_table;
  Buffer device_k, device_v;

  Cache(KvView::Kind kind, int64_t row_stride, int64_t elements, DType kv_type) : type(kv_type) {
    layout.kind = kind;
    layout.row_stride = row_stride;
    k.assign(static_cast<size_t>(elements), to_kv(NAN, type));
    v.assign(static_cast<size_t>(elements), to_kv(NAN, type));
  }
  void put(const Tokens& tokens, int t, int64_t row_offset) {
    std::copy_n(tokens.k.begin() + t * kKvWidth, kKvWidth, k.begin() + row_offset);
    std::copy_n(tokens.v.begin() + t * kKvWidth, kKvWidth, v.begin() + row_offset);
  }
  void mirror(Backend& gpu) {
    device_k = to_backend(gpu, k);
    device_v = to_backend(gpu, v);
  }
  KvView host_view() const { return with(k.data(), v.data()); }
  KvView device_view() const { return with(device_k.get<uint16_t>(), device_v.get<uint16_t>()); }

 private:
  KvView with(const uint16_t* keys, const uint16_t* values) const {
    KvView view = layout;
    view.k = keys;
    view.v = values;
    view.block_table = block_table.empty() ? nullptr : block_table.data();  // host memory
    return view;
  }
};

// Padded rows and 40 spare rows past the last token.
std::unique_ptr<Cache> contiguous_cache(const Tokens& t) {
  const int64_t stride = kKvWidth + 8;
  auto c = std::make_unique<Cache>(KvView::Kind::kContiguous, stride, (t.n + 40) * stride, t.type);
  for (int i = 0; i < t.n; ++i) c->put(t, i, i * stride);
  return c;
}

// Blocks of 16 padded rows, shuffled in an arena with spare blocks, as the KV arena pages them.
std::unique_ptr<Cache> paged_cache(const Tokens& t, std::mt19937& rng) {
  const int block_size = 16;
  const int64_t stride = kKvWidth + 8, block_stride = block_size * stride + 24;
  const int num_blocks = (t.n + block_size - 1) / block_size;
  std::vector<int32_t> ids(static_cast<size_t>(num_blocks + 3));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  auto c = std::make_unique<Cache>(KvView::Kind::kPaged, stride,
                                   static_cast<int64_t>(ids.size()) * block_stride, t.type);
  c->block_table.assign(ids.begin(), ids.begin() + num_blocks);
  c->layout.block_size = block_size;
  c->layout.block_stride = block_stride;
  for (int i = 0; i < t.n; ++i) {
    c->put(t, i, c->block_table[i / block_size] * block_stride + (i % block_size) * stride);
  }
  return c;
}

// A lazy layer's slot, written token by token as model/hybrid_sequence.cpp writes it (row
// t < sink ? t : sink + (t − sink) % window), so the window slides over older tokens.
std::unique_ptr<Cache> ring_cache(const Tokens& t, int sink, int window) {
  const int64_t stride = kKvWidth + 4;
  auto c = std::make_unique<Cache>(KvView::Kind::kRing, stride, (sink + window) * stride, t.type);
  c->layout.sink = sink;
  c->layout.window = window;
  for (int i = 0; i < t.n; ++i) c->put(t, i, (i < sink ? i : sink + (i - sink) % window) * stride);
  return c;
}

// The same ring paged as the KV arena pages a lazy layer: ring row r in page table[r / 16],
// pages shuffled among spare ones.
std::unique_ptr<Cache> paged_ring_cache(const Tokens& t, int sink, int window, std::mt19937& rng) {
  const int block_size = 16;
  const int64_t stride = kKvWidth + 8, block_stride = block_size * stride + 24;
  const int num_blocks = (std::min(t.n, sink + window) + block_size - 1) / block_size;
  std::vector<int32_t> ids(static_cast<size_t>(num_blocks + 3));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  auto c = std::make_unique<Cache>(KvView::Kind::kRing, stride,
                                   static_cast<int64_t>(ids.size()) * block_stride, t.type);
  c->block_table.assign(ids.begin(), ids.begin() + num_blocks);
  c->layout.block_size = block_size;
  c->layout.block_stride = block_stride;
  c->layout.sink = sink;
  c->layout.window = window;
  for (int i = 0; i < t.n; ++i) {
    const int r = i < sink ? i : sink + (i - sink) % window;
    c->put(t, i, c->block_table[r / block_size] * block_stride + (r % block_size) * stride);
  }
  return c;
}

const char* kind_name(KvView::Kind kind) {
  static const char* const names[] = {"contiguous", "paged", "ring"};
  return names[static_cast<int>(kind)];
}

struct SeqCase {
  const Cache* cache;
  int32_t num_queries, first_pos;
};

class CudaAttentionTest : public CudaBackendTest {
 protected:
  // Tokens and their cache in one layout, mirrored on the device; owned by the test.
  const Cache& add_cache(std::unique_ptr<Cache> cache) {
    cache->mirror(gpu());
    caches_.push_back(std::move(cache));
    return *caches_.back();
  }

  // One attention call with `cases` as its sequences on both backends (rows in case order, or
  // reversed), compared sequence by sequence: outputs of O(1) within 2e-3 (the GPU may keep f32
  // probabilities where the CPU rounds them to f16, and sums in another order; a wrong mask or
  // row moves outputs by O(0.1)), log-sum-exps within 1e-3. A bf16 cache (the cases' type) allows
  // 1e-2 on outputs: a probability rounded to bf16 on one side only moves by up to 2^-8.
  void compare(const std::vector<SeqCase>& cases, bool round, std::mt19937& rng,
               bool reverse_rows = false) {
    const DType type = cases.front().cache->type;
    const AttentionShape shape = model_shape(round, type);
    const double out_tol = type == DType::kBF16 ? 1e-2 : 2e-3;
    int64_t rows = 0;
    std::vector<int64_t> first_rows(cases.size());
    for (size_t j = 0; j < cases.size(); ++j) {
      const size_t i = reverse_rows ? cases.size() - 1 - j : j;
      first_rows[i] = rows;
      rows += cases[i].num_queries;
    }
    const std::vector<float> q = random_normal(static_cast<size_t>(rows * kQStride), rng, 2.0f);
    std::vector<float> want(static_cast<size_t>(rows * kOutStride), NAN);
    std::vector<float> want_lse(static_cast<size_t>(rows * kHeads), NAN);
    const Buffer gq = to_backend(gpu(), q);
    Buffer gout = to_backend(gpu(), want);
    Buffer glse = to_backend(gpu(), want_lse);
    std::vector<AttentionSeq> cpu_seqs, gpu_seqs;
    for (size_t i = 0; i < cases.size(); ++i) {
      AttentionSeq seq;
      seq.first_row = first_rows[i];
      seq.num_queries = cases[i].num_queries;
      seq.first_pos = cases[i].first_pos;
      seq.kv = cases[i].cache->host_view();
      seq.lse = want_lse.data() + first_rows[i] * kHeads;
      cpu_seqs.push_back(seq);
      seq.kv = cases[i].cache->device_view();
      seq.lse = glse.get<float>() + first_rows[i] * kHeads;
      gpu_seqs.push_back(seq);
    }
    cpu().attention(q.data(), cpu_seqs, shape, want.data());
    gpu().attention(gq.get<float>(), gpu_seqs, shape, gout.get<float>());
    const std::vector<float> got = to_host<float>(gpu(), gout, want.size());
    const std::vector<float> got_lse = to_host<float>(gpu(), glse, want_lse.size());

    for (size_t i = 0; i < cases.size(); ++i) {
      const SeqCase& c = cases[i];
      const std::string what = std::string(kind_name(c.cache->layout.kind)) + " seq " +
                               std::to_string(i) + "/" + std::to_string(cases.size()) + ": " +
                               std::to_string(c.num_queries) + " q at pos " +
                               std::to_string(c.first_pos) + (round ? ", rounded probs" : "") +
                               (type == DType::kBF16 ? ", bf16 cache" : "");
      auto slice = [&](const std::vector<float>& v, int64_t width) {
        const auto begin = v.begin() + first_rows[i] * width;
        return std::vector<float>(begin, begin + c.num_queries * width);
      };
      EXPECT_TRUE(all_close(slice(got, kOutStride), slice(want, kOutStride), out_tol, 0, kOutStride,
                            what + " out [q, head·64+d]"));
      EXPECT_TRUE(all_close(slice(got_lse, kHeads), slice(want_lse, kHeads), 1e-3, 0, kHeads,
                            what + " lse [q, head]"));
    }
  }

  std::vector<std::unique_ptr<Cache>> caches_;
};

TEST_F(CudaAttentionTest, ContiguousPrefillMatchesCpu) {
  std::mt19937 rng(9);
  // {queries, first position}: prompt starts, and chunks after cached keys (the last a decode).
  const std::vector<std::pair<int32_t, int32_t>> cases = {{1, 0},  {5, 0},      {300, 0}, {2100, 0},
                                                          {5, 37}, {300, 1000}, {1, 4000}};
  for (const auto& [num_queries, first_pos] : cases) {
    const Cache& cache = add_cache(contiguous_cache(Tokens(first_pos + num_queries, rng)));
    for (bool round : {false, true}) compare({{&cache, num_queries, first_pos}}, round, rng);
  }
}

TEST_F(CudaAttentionTest, PagedDecodeBatchMatchesCpu) {
  std::mt19937 rng(10);
  std::vector<SeqCase> decodes;
  for (int n : {1, 17, 1000, 5000}) {
    const Tokens tokens(n, rng);
    decodes.push_back({&add_cache(paged_cache(tokens, rng)), 1, n - 1});
  }
  // A chunk of queries over paged keys is allowed too.
  const Tokens tokens(93, rng);
  const Cache& chunk = add_cache(paged_cache(tokens, rng));
  for (bool round : {false, true}) {
    compare(decodes, round, rng);
    compare({{&chunk, 33, 60}}, round, rng);
  }
}

TEST_F(CudaAttentionTest, RingDecodeBatchMatchesCpu) {
  std::mt19937 rng(11);
  const int sink = 4, window = 1020;
  std::vector<SeqCase> decodes;
  // Before the ring fills, exactly full, one past, and after many wraps.
  for (int n : {1, 4, 5, 600, 1023, 1024, 1025, 3000, 5000}) {
    const Tokens tokens(n, rng);
    decodes.push_back({&add_cache(ring_cache(tokens, sink, window)), 1, n - 1});
  }
  // Several queries while the ring still holds every token.
  const Tokens tokens(300, rng);
  const Cache& chunk = add_cache(ring_cache(tokens, sink, window));
  for (bool round : {false, true}) {
    compare(decodes, round, rng);
    compare({{&chunk, 40, 260}}, round, rng);
  }
}

TEST_F(CudaAttentionTest, PagedRingDecodeBatchMatchesCpu) {
  std::mt19937 rng(14);
  const int sink = 4, window = 1020;
  std::vector<SeqCase> decodes;
  for (int n : {1, 17, 600, 1023, 1024, 1025, 3000}) {
    decodes.push_back({&add_cache(paged_ring_cache(Tokens(n, rng), sink, window, rng)), 1, n - 1});
  }
  const Cache& chunk = add_cache(paged_ring_cache(Tokens(300, rng), sink, window, rng));
  for (bool round : {false, true}) {
    compare(decodes, round, rng);
    compare({{&chunk, 40, 260}}, round, rng);
  }
}

TEST_F(CudaAttentionTest, MixedBatchInOneCallMatchesCpu) {
  std::mt19937 rng(12);
  const Cache& prompt = add_cache(contiguous_cache(Tokens(400, rng)));
  const Cache& paged = add_cache(paged_cache(Tokens(1000, rng), rng));
  const Cache& ring = add_cache(ring_cache(Tokens(3000, rng), 4, 1020));
  const Cache& decode = add_cache(contiguous_cache(Tokens(1501, rng)));
  const Cache& short_ring = add_cache(ring_cache(Tokens(700, rng), 4, 1020));
  const Cache& paged_ring = add_cache(paged_ring_cache(Tokens(2000, rng), 4, 1020, rng));
  const std::vector<SeqCase> batch = {
      {&prompt, 300, 100},                    // a prefill chunk after 100 cached tokens
      {&paged, 1, 999},                       // decodes of every kind
      {&ring, 1, 2999},    {&paged, 1, 998},  // the same paged cache, one token earlier
      {&decode, 1, 1500},  {&short_ring, 1, 699}, {&paged_ring, 1, 1999},
  };
  for (bool round : {false, true}) {
    compare(batch, round, rng);
    compare(batch, round, rng, /*reverse_rows=*/true);
  }
}

// A bf16 cache (--kv-dtype bf16) through every path: the tensor-core prefill (bf16 mma), the
// split decode over paged, ring and paged-ring views, in one mixed call.
TEST_F(CudaAttentionTest, Bf16CacheMatchesCpu) {
  std::mt19937 rng(15);
  const DType bf16 = DType::kBF16;
  for (const auto& [num_queries, first_pos] :
       std::vector<std::pair<int32_t, int32_t>>{{5, 0}, {300, 0}, {2100, 0}, {300, 1000}}) {
    const Cache& cache = add_cache(contiguous_cache(Tokens(first_pos + num_queries, rng, bf16)));
    for (bool round : {false, true}) compare({{&cache, num_queries, first_pos}}, round, rng);
  }
  const Cache& paged = add_cache(paged_cache(Tokens(1000, rng, bf16), rng));
  const Cache& ring = add_cache(ring_cache(Tokens(3000, rng, bf16), 4, 1020));
  const Cache& paged_ring = add_cache(paged_ring_cache(Tokens(2000, rng, bf16), 4, 1020, rng));
  const Cache& prompt = add_cache(contiguous_cache(Tokens(400, rng, bf16)));
  const std::vector<SeqCase> batch = {
      {&prompt, 300, 100}, {&paged, 1, 999}, {&ring, 1, 2999}, {&paged_ring, 1, 1999}};
  for (bool round : {false, true}) compare(batch, round, rng);
}

// The decode attention of a recorded step (CUDA graphs, Backend::begin_decode_step): three
// sequences (paged, paged ring that has wrapped, contiguous) padded to a bucket of 4 rows,
// attended six times with new queries and positions each time. The first steps issue the records,
// later ones replay the captured graph; every step must match the CPU on its own inputs (the
// descriptors are read from the staged data, not baked into the graph), and the padded row is never
// written.
TEST_F(CudaAttentionTest, RecordedDecodeStepsMatchCpuWhenReplayed) {
  std::mt19937 rng(21);
  const int sink = 4, window = 60;
  const Cache& paged = add_cache(paged_cache(Tokens(300, rng), rng));
  const Cache& ring = add_cache(paged_ring_cache(Tokens(200, rng), sink, window, rng));
  const Cache& contiguous = add_cache(contiguous_cache(Tokens(77, rng)));
  const Cache* caches[] = {&paged, &ring, &contiguous};
  const AttentionShape shape = model_shape(false);
  // The same device buffers every step (a graph replays the pointers it was captured with).
  Buffer gq = to_backend(gpu(), std::vector<float>(static_cast<size_t>(4 * kQStride)));
  Buffer gout = to_backend(gpu(), std::vector<float>(static_cast<size_t>(4 * kOutStride)));
  gpu().set_graphs(true);
  for (int step = 0; step < 6; ++step) {
    // Positions move back every step: each step attends other key counts (within the 512-key
    // bucket of the longest).
    const std::vector<float> q = random_normal(static_cast<size_t>(4 * kQStride), rng, 2.0f);
    std::vector<float> want(static_cast<size_t>(4 * kOutStride), NAN);
    gpu().upload(gq.get<void>(), q.data(), static_cast<int64_t>(q.size() * sizeof(float)));
    gpu().upload(gout.get<void>(), want.data(), static_cast<int64_t>(want.size() * sizeof(float)));
    std::vector<AttentionSeq> cpu_seqs, gpu_seqs;
    for (int i = 0; i < 3; ++i) {
      AttentionSeq seq;
      seq.first_row = i;
      seq.num_queries = 1;
      seq.first_pos =
          caches[i]->layout.kind == KvView::Kind::kContiguous ? 76 - 2 * step : 299 - 5 * step;
      if (caches[i] == &ring) seq.first_pos = 199;  // its last token: the ring holds its window
      seq.kv = caches[i]->host_view();
      cpu_seqs.push_back(seq);
      seq.kv = caches[i]->device_view();
      gpu_seqs.push_back(seq);
    }
    cpu().attention(q.data(), cpu_seqs, shape, want.data());
    ASSERT_EQ(gpu().begin_decode_step(3), 4);
    gpu().attention(gq.get<float>(), gpu_seqs, shape, gout.get<float>());
    gpu().end_decode_step();
    const std::vector<float> got = to_host<float>(gpu(), gout, want.size());
    const std::string what = "recorded decode step " + std::to_string(step);
    EXPECT_TRUE(all_close(std::vector<float>(got.begin(), got.begin() + 3 * kOutStride),
                          std::vector<float>(want.begin(), want.begin() + 3 * kOutStride), 2e-3, 0,
                          kOutStride, what + " out [q, head·64+d]"));
    for (int64_t i = 3 * kOutStride; i < 4 * kOutStride; ++i) {
      ASSERT_TRUE(std::isnan(got[static_cast<size_t>(i)]))
          << what << ": the padded row was written";
    }
  }
  // Step 0 grew the partials (eager), step 1 was seen (eager), step 2 captured, 3-5 replayed.
  EXPECT_GE(gpu().graph_launches(), 3);
  gpu().set_graphs(false);
}

TEST_F(CudaAttentionTest, LazyRatioMatchesCpu) {
  std::mt19937 rng(13);
  struct Case {
    int32_t n, w_last, sink, window;
  };
  for (const Case& c : std::vector<Case>{
           {3000, 64, 4, 1020}, {1000, 64, 4, 1020}, {200, 64, 4, 20}, {40, 64, 4, 20}}) {
    for (const DType type : {DType::kF16, DType::kBF16}) {
      const Tokens tokens(c.n, rng, type);
      const Cache& cache = add_cache(contiguous_cache(tokens));
      // Queries scaled so that attention is peaked enough for ratios away from 0 and 1.
      const std::vector<float> q = random_normal(static_cast<size_t>(c.n) * kQStride, rng, 3.0f);
      const Buffer gq = to_backend(gpu(), q);
      for (bool round : {false, true}) {
        const AttentionShape shape = model_shape(round, type);
        // The log-sum-exp of the last w_last queries, as the prefill's attention leaves it.
        const int32_t first = std::max(0, c.n - c.w_last);
        std::vector<float> lse(static_cast<size_t>(c.n) * kHeads, NAN);
        std::vector<float> out(static_cast<size_t>(c.n) * kOutStride, NAN);
        Buffer glse = to_backend(gpu(), lse);
        Buffer gout = to_backend(gpu(), out);
        AttentionSeq seq;
        seq.first_row = first;
        seq.num_queries = c.n - first;
        seq.first_pos = first;
        seq.kv = cache.host_view();
        seq.lse = lse.data() + static_cast<int64_t>(first) * kHeads;
        cpu().attention(q.data(), {&seq, 1}, shape, out.data());
        seq.kv = cache.device_view();
        seq.lse = glse.get<float>() + static_cast<int64_t>(first) * kHeads;
        gpu().attention(gq.get<float>(), {&seq, 1}, shape, gout.get<float>());

        for (LazyScore score : {LazyScore::kMean, LazyScore::kHeadMin, LazyScore::kHeadMinLast}) {
          std::vector<float> want_heads(kHeads, NAN), got_heads(kHeads, NAN);
          const float want =
              cpu().lazy_ratio(q.data(), lse.data(), cache.host_view(), c.n, c.w_last, c.sink,
                               c.window, shape, score, want_heads.data());
          const float got =
              gpu().lazy_ratio(gq.get<float>(), glse.get<float>(), cache.device_view(), c.n,
                               c.w_last, c.sink, c.window, shape, score, got_heads.data());
          const std::string what =
              "lazy_ratio n " + std::to_string(c.n) + " w_last " + std::to_string(c.w_last) +
              " sink " + std::to_string(c.sink) + " window " + std::to_string(c.window) +
              " score " + std::to_string(static_cast<int>(score)) +
              (round ? ", rounded probs" : "") + (type == DType::kBF16 ? ", bf16 cache" : "");
          std::printf("  %-60s got %.6f want %.6f\n", what.c_str(), got, want);
          EXPECT_NEAR(got, want, 1e-3) << what;
          EXPECT_GE(got, 0.0f) << what;
          EXPECT_LE(got, 1.0f) << what;
          for (int h = 0; h < kHeads; ++h) EXPECT_NEAR(got_heads[h], want_heads[h], 1e-3) << what;
          // The score is the mean or the minimum of the per-head ratios it returns.
          const float least = *std::min_element(got_heads.begin(), got_heads.end());
          if (score != LazyScore::kMean) {
            EXPECT_EQ(got, least) << what;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace lightserve::kernels
