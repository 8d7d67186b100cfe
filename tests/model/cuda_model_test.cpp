// The real model on the CUDA backend against the CPU oracle (docs/design.md §10): the same forward
// pass, written once against kernels::Backend, must give the CPU's logits up to f16 rounding
// (the GPU keeps weights and matmul inputs in f16) and the same greedy tokens, for the plain
// model, a batch, and LightTransfer's hybrid (paged full layers, ring slots, lazy ratios on the
// device). Skipped where no GPU is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "sampling/sampler.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
using sampling::argmax;

namespace {

const char* kText =
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. "
    "Every evening the keeper climbed the spiral stairs, one hundred and twelve of them, to light "
    "the lamp. Ships passing in the night relied on its beam to find the narrow channel between "
    "the rocks. One winter a storm broke the great lens, and for three weeks the coast was dark. "
    "The keeper wrote to the harbour master, who wrote to the ministry, who sent a new lens by "
    "train and then by cart across the moor. When it finally arrived the whole village came to "
    "watch it being hauled up the cliff path. ";

class CudaModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cpu_ = testing::shared_model();
    if (cpu_ == nullptr) return;
    std::string why;
    backend_ = kernels::make_cuda_backend(0, &why).release();
    if (backend_ == nullptr) {
      skip_reason_ = new std::string(why);
      return;
    }
    auto loaded = LlamaModel::load(gguf_testing::test_model_path(), *backend_);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    gpu_ = std::move(loaded).value().release();
    std::printf("CUDA backend: %s\n", backend_->description().c_str());
  }
  static void TearDownTestSuite() {
    delete gpu_;
    gpu_ = nullptr;
    delete backend_;
    backend_ = nullptr;
  }
  void SetUp() override {
    if (cpu_ == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
    if (backend_ == nullptr) GTEST_SKIP() << *skip_reason_;
  }

  std::vector<int32_t> prompt(int repeats) const {
    std::string text;
    for (int i = 0; i < repeats; ++i) text += kText;
    return cpu_->tokenizer().encode(text, true);
  }

  static LlamaModel* cpu_;
  static LlamaModel* gpu_;
  static kernels::Backend* backend_;
  static std::string* skip_reason_;
};

LlamaModel* CudaModel::cpu_ = nullptr;
LlamaModel* CudaModel::gpu_ = nullptr;
kernels::Backend* CudaModel::backend_ = nullptr;
std::string* CudaModel::skip_reason_ = nullptr;

struct Compared {
  double max_abs = 0;    // largest |gpu − cpu| over every logit
  double max_logit = 0;  // largest |cpu| (scale)
  int rows = 0;
  int argmax_equal = 0;
};

Compared compare(const std::vector<float>& cpu, const std::vector<float>& gpu, int32_t vocab) {
  Compared c;
  c.rows = static_cast<int>(cpu.size() / static_cast<size_t>(vocab));
  for (size_t i = 0; i < cpu.size(); ++i) {
    c.max_abs = std::max(c.max_abs, static_cast<double>(std::fabs(cpu[i] - gpu[i])));
    c.max_logit = std::max(c.max_logit, static_cast<double>(std::fabs(cpu[i])));
  }
  for (int r = 0; r < c.rows; ++r) {
    std::span<const float> a(cpu.data() + static_cast<size_t>(r) * vocab, vocab);
    std::span<const float> b(gpu.data() + static_cast<size_t>(r) * vocab, vocab);
    c.argmax_equal += argmax(a) == argmax(b);
  }
  return c;
}

// Greedy continuation of `prompt` through `cache` (already empty) for `steps` tokens.
std::vector<int32_t> greedy(LlamaModel& model, SequenceKv& cache,
                            const std::vector<int32_t>& prompt, int steps) {
  std::vector<float> logits;
  BatchEntry e{&cache, prompt, false};
  EXPECT_TRUE(model.forward({&e, 1}, logits).ok());
  std::vector<int32_t> out;
  for (int s = 0; s < steps; ++s) {
    const int32_t next = argmax(logits);
    out.push_back(next);
    BatchEntry d{&cache, {&out.back(), 1}, false};
    const Status st = model.forward({&d, 1}, logits);
    EXPECT_TRUE(st.ok()) << st.message();
  }
  return out;
}

int common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  int n = 0;
  while (n < static_cast<int>(std::min(a.size(), b.size())) && a[n] == b[n]) ++n;
  return n;
}

TEST_F(CudaModel, PrefillLogitsMatchTheCpu) {
  const std::vector<int32_t> p = prompt(2);
  const int32_t vocab = cpu_->config().vocab_size;
  SequenceCache on_cpu(cpu_->config(), static_cast<int32_t>(p.size()));
  SequenceCache on_gpu(gpu_->config(), static_cast<int32_t>(p.size()));
  std::vector<float> a, b;
  BatchEntry ea{&on_cpu, p, true}, eb{&on_gpu, p, true};
  ASSERT_TRUE(cpu_->forward({&ea, 1}, a).ok());
  const Status s = gpu_->forward({&eb, 1}, b);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(a.size(), b.size());
  const Compared c = compare(a, b, vocab);
  std::printf(
      "prefill of %zu tokens: max |Δlogit| %.4f (logits up to %.2f), argmax equal in %d "
      "of %d rows\n",
      p.size(), c.max_abs, c.max_logit, c.argmax_equal, c.rows);
  EXPECT_LT(c.max_abs, 0.05 * c.max_logit);
  EXPECT_GE(c.argmax_equal, c.rows * 95 / 100);
  EXPECT_EQ(argmax({a.data() + a.size() - vocab, static_cast<size_t>(vocab)}),
            argmax({b.data() + b.size() - vocab, static_cast<size_t>(vocab)}));
}

TEST_F(CudaModel, GreedyDecodeFollowsTheCpu) {
  const std::vector<int32_t> p = prompt(1);
  const int steps = 24;
  SequenceCache on_cpu(cpu_->config(), static_cast<int32_t>(p.size()) + steps + 1);
  SequenceCache on_gpu(gpu_->config(), static_cast<int32_t>(p.size()) + steps + 1);
  const std::vector<int32_t> a = greedy(*cpu_, on_cpu, p, steps);
  const std::vector<int32_t> b = greedy(*gpu_, on_gpu, p, steps);
  const int same = common_prefix(a, b);
  std::printf("greedy: %d of %d tokens equal before the first difference\n  cpu: %s\n  gpu: %s\n",
              same, steps, cpu_->tokenizer().decode(a).c_str(),
              gpu_->tokenizer().decode(b).c_str());
  EXPECT_GE(same, 12);
}

TEST_F(CudaModel, ABatchEqualsEachSequenceAlone) {
  const std::vector<int32_t> p1 = prompt(1);
  std::vector<int32_t> p2 = prompt(2);
  p2.resize(p2.size() - 37);
  const int32_t vocab = gpu_->config().vocab_size;
  std::vector<float> alone1, alone2, both;
  {
    SequenceCache c1(gpu_->config(), 1024), c2(gpu_->config(), 1024);
    BatchEntry e1{&c1, p1, false}, e2{&c2, p2, false};
    ASSERT_TRUE(gpu_->forward({&e1, 1}, alone1).ok());
    ASSERT_TRUE(gpu_->forward({&e2, 1}, alone2).ok());
  }
  SequenceCache c1(gpu_->config(), 1024), c2(gpu_->config(), 1024);
  const BatchEntry batch[] = {{&c1, p1, false}, {&c2, p2, false}};
  ASSERT_TRUE(gpu_->forward(batch, both).ok());
  ASSERT_EQ(both.size(), 2u * vocab);
  double worst = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(both[i] - alone1[i])));
    worst = std::max(worst, static_cast<double>(std::fabs(both[vocab + i] - alone2[i])));
  }
  std::printf("batch vs alone: max |Δlogit| %.5f\n", worst);
  EXPECT_LT(worst, 0.05);
  EXPECT_EQ(argmax({both.data(), static_cast<size_t>(vocab)}), argmax(alone1));
  EXPECT_EQ(argmax({both.data() + vocab, static_cast<size_t>(vocab)}), argmax(alone2));
}

// Launch fusion (add + rms_norm, rope + K/V stores, f16 matmul inputs) changes launches, not
// numbers: a prefill batch and decode steps give the unfused path's logits bit for bit; and the
// device argmax (forward_argmax) gives the argmax of those logits.
TEST_F(CudaModel, FusedLaunchesAndDeviceArgmaxChangeNoLogit) {
  const std::vector<int32_t> p1 = prompt(1);
  std::vector<int32_t> p2 = prompt(2);
  p2.resize(p2.size() - 11);
  const int32_t vocab = gpu_->config().vocab_size;
  const int steps = 6;
  struct Run {
    std::vector<std::vector<float>> logits;  // per forward call
    std::vector<std::vector<int32_t>> ids;   // forward_argmax of the same calls, on other caches
  };
  auto run = [&](bool fused) {
    backend_->set_fusion(fused);
    Run r;
    SequenceCache a1(gpu_->config(), 1024), a2(gpu_->config(), 1024);
    SequenceCache b1(gpu_->config(), 1024), b2(gpu_->config(), 1024);
    std::vector<float> logits;
    std::vector<int32_t> ids;
    const BatchEntry prefill_a[] = {{&a1, p1, false}, {&a2, p2, false}};
    const BatchEntry prefill_b[] = {{&b1, p1, false}, {&b2, p2, false}};
    EXPECT_TRUE(gpu_->forward(prefill_a, logits).ok());
    EXPECT_TRUE(gpu_->forward_argmax(prefill_b, ids).ok());
    r.logits.push_back(logits);
    r.ids.push_back(ids);
    std::vector<int32_t> next = {argmax({logits.data(), static_cast<size_t>(vocab)}),
                                 argmax({logits.data() + vocab, static_cast<size_t>(vocab)})};
    for (int s = 0; s < steps; ++s) {
      const BatchEntry da[] = {{&a1, {&next[0], 1}, false}, {&a2, {&next[1], 1}, false}};
      const BatchEntry db[] = {{&b1, {&next[0], 1}, false}, {&b2, {&next[1], 1}, false}};
      EXPECT_TRUE(gpu_->forward(da, logits).ok());
      EXPECT_TRUE(gpu_->forward_argmax(db, ids).ok());
      r.logits.push_back(logits);
      r.ids.push_back(ids);
      next = {argmax({logits.data(), static_cast<size_t>(vocab)}),
              argmax({logits.data() + vocab, static_cast<size_t>(vocab)})};
    }
    return r;
  };
  const Run plain = run(false);
  const Run fused = run(true);
  backend_->set_fusion(true);
  ASSERT_EQ(plain.logits.size(), fused.logits.size());
  for (size_t call = 0; call < fused.logits.size(); ++call) {
    ASSERT_EQ(fused.logits[call].size(), 2u * vocab);
    int64_t differ = 0;
    for (size_t i = 0; i < fused.logits[call].size(); ++i) {
      differ += fused.logits[call][i] != plain.logits[call][i];
    }
    EXPECT_EQ(differ, 0) << "call " << call << ": logits differ between fused and unfused";
    const std::vector<int32_t> want = {
        argmax({fused.logits[call].data(), static_cast<size_t>(vocab)}),
        argmax({fused.logits[call].data() + vocab, static_cast<size_t>(vocab)})};
    EXPECT_EQ(fused.ids[call], want) << "call " << call;
    EXPECT_EQ(plain.ids[call], want) << "call " << call;
  }
}

// Sampling candidates on the device (forward_candidates: Backend::topk_rows' kernel over the
// output rows, one download of k pairs per row): each reduced row is the first k of the same
// call's device logits in sampling::ranks_before order, bit for bit; a whole row in the same
// batch is forward's.
TEST_F(CudaModel, DeviceCandidatesAreTheBestOfTheDevicesLogits) {
  const std::vector<int32_t> p1 = prompt(1);
  std::vector<int32_t> p2 = prompt(2);
  p2.resize(p2.size() - 5);
  const std::vector<int32_t> p3 = cpu_->tokenizer().encode("List three colors:", true);
  const size_t vocab = static_cast<size_t>(gpu_->config().vocab_size);
  const std::vector<int32_t> ks = {40, 0, 1};
  std::vector<std::unique_ptr<SequenceCache>> a, b;
  std::vector<BatchEntry> by_logits, by_candidates;
  const std::vector<int32_t>* prompts[] = {&p1, &p2, &p3};
  for (const std::vector<int32_t>* p : prompts) {
    a.push_back(std::make_unique<SequenceCache>(gpu_->config(), 1024));
    b.push_back(std::make_unique<SequenceCache>(gpu_->config(), 1024));
    by_logits.push_back({a.back().get(), *p, false});
    by_candidates.push_back({b.back().get(), *p, false});
    by_candidates.back().num_candidates = ks[by_candidates.size() - 1];
  }
  std::vector<int32_t> next(ks.size());
  for (int step = 0; step < 5; ++step) {
    std::vector<float> logits, whole;
    std::vector<kernels::Ranked> candidates;
    ASSERT_TRUE(gpu_->forward(by_logits, logits).ok());
    ASSERT_TRUE(gpu_->forward_candidates(by_candidates, whole, candidates).ok());
    ASSERT_EQ(logits.size(), ks.size() * vocab);
    ASSERT_EQ(candidates.size(), 41u);
    ASSERT_TRUE(std::equal(whole.begin(), whole.end(), logits.begin() + vocab)) << step;
    size_t at = 0;
    for (size_t i = 0; i < ks.size(); ++i) {
      std::vector<sampling::Candidate> all;
      for (size_t t = 0; t < vocab; ++t) {
        all.push_back({static_cast<int32_t>(t), logits[i * vocab + t]});
      }
      std::sort(all.begin(), all.end(), sampling::ranks_before);
      next[i] = all[0].id;
      for (int32_t j = 0; j < ks[i]; ++j) {
        ASSERT_EQ(candidates[at].id, all[j].id)
            << "step " << step << " entry " << i << " rank " << j;
        ASSERT_EQ(candidates[at].value, all[j].value) << "step " << step << " entry " << i;
        ++at;
      }
    }
    for (size_t i = 0; i < ks.size(); ++i) {
      by_logits[i].tokens = by_candidates[i].tokens = std::span<const int32_t>(&next[i], 1);
    }
  }
}

// LightTransfer on the device: lazy ratios, the chosen layers, the cut into ring slots and paged
// blocks, then decode over both views.
TEST_F(CudaModel, HybridSequenceFollowsTheCpu) {
  const std::vector<int32_t> p = prompt(5);  // ~650 tokens, far beyond the window
  const int steps = 16;
  LightTransferSettings lt;
  lt.mode = LtMode::kOnline;
  lt.lazy_fraction = 0.5;
  lt.sink = 4;
  lt.window = 124;
  lt.w_last = 32;
  const int32_t capacity = static_cast<int32_t>(p.size()) + steps + 1;
  struct Run {
    std::unique_ptr<KvArena> arena;
    std::unique_ptr<HybridSequence> seq;
    std::vector<int32_t> tokens;
  };
  auto run = [&](LlamaModel& model) {
    Run r;
    auto arena = KvArena::create_for(model.backend(), model.config(), lt, capacity);
    EXPECT_TRUE(arena.ok()) << arena.error().message;
    r.arena = std::move(arena).value();
    auto seq = HybridSequence::create(*r.arena, model.config(), lt, capacity);
    EXPECT_TRUE(seq.ok()) << seq.error().message;
    r.seq = std::move(seq).value();
    r.tokens = greedy(model, *r.seq, p, steps);
    return r;
  };
  const Run a = run(*cpu_);
  const Run b = run(*gpu_);
  double worst = 0;
  for (size_t l = 0; l < a.seq->lazy_ratios().size(); ++l) {
    worst = std::max(
        worst, static_cast<double>(std::fabs(a.seq->lazy_ratios()[l] - b.seq->lazy_ratios()[l])));
  }
  std::string map_a, map_b;
  for (int32_t l = 0; l < a.seq->layer_map().num_layers(); ++l) {
    map_a += a.seq->layer_map().is_lazy(l) ? 'L' : 'F';
    map_b += b.seq->layer_map().is_lazy(l) ? 'L' : 'F';
  }
  const int same = common_prefix(a.tokens, b.tokens);
  std::printf(
      "hybrid (%zu-token prompt): max |Δ lazy ratio| %.5f\n  cpu map %s\n  gpu map %s\n"
      "  greedy: %d of %d tokens equal\n",
      p.size(), worst, map_a.c_str(), map_b.c_str(), same, steps);
  EXPECT_LT(worst, 0.01);
  EXPECT_EQ(map_a, map_b);
  EXPECT_GE(same, 8);
  EXPECT_EQ(a.seq->kv_bytes(), b.seq->kv_bytes());
}

}  // namespace
}  // namespace lightserve::model
