// CUDA graphs of decode steps (kernels/cuda/cuda_graphs.h) on the real model. A replayed graph
// computes what issuing the same recorded launches computes, bit for bit
// (LIGHTSERVE_CUDA_GRAPHS=1 against =eager), over decode steps whose positions, batch and
// contexts change — a sequence's keys crossing the attention grid's key bucket, a sequence joining
// after its own prefill (a step that is not a pure decode), the batch shrinking to another
// bucket — with full (contiguous, paged) and lazy (paged ring) layers, f16 and bf16 KV. Against
// the default path (graphs off) the logits stay within f16 rounding: padding the rows to the
// bucket and sizing the attention split for it change cuBLAS's and the split's summation order,
// not what is computed. Skipped where no GPU is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "sampling/sampler.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

const char* kText =
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. "
    "Every evening the keeper climbed the spiral stairs, one hundred and twelve of them, to light "
    "the lamp. Ships passing in the night relied on its beam to find the narrow channel between "
    "the rocks. ";

// A CUDA backend created with LIGHTSERVE_CUDA_GRAPHS set to `mode` ("" unset); null when there is
// no device (the reason in *why).
std::unique_ptr<kernels::Backend> cuda_backend(const char* mode, std::string* why) {
  if (*mode != '\0') {
    setenv("LIGHTSERVE_CUDA_GRAPHS", mode, 1);
  } else {
    unsetenv("LIGHTSERVE_CUDA_GRAPHS");
  }
  auto backend = kernels::make_cuda_backend(0, why);
  unsetenv("LIGHTSERVE_CUDA_GRAPHS");
  return backend;
}

struct Steps {
  std::vector<std::vector<float>> logits;  // per decode step
  std::vector<int32_t> batch_sizes;
};

// Four sequences on `model`: A (contiguous, ~230-token prompt: its keys cross 256 during the
// steps), B (LightTransfer, half the layers lazy: paged full layers and paged rings that wrap), C
// (contiguous, short), and D, prefilled after step 10 and decoding from then on. Steps 0-9 decode
// A, B, C (bucket 4); 10-29 A, B, C, D (bucket 4); 30-39 A, D (bucket 2). Greedy tokens come
// from `feed`'s logits, so every run decodes the same tokens.
Steps scenario(LlamaModel& model, const Steps* feed) {
  const LlamaConfig& c = model.config();
  std::string long_text;
  for (int i = 0; i < 3; ++i) long_text += kText;
  std::vector<int32_t> pa = model.tokenizer().encode(long_text, true);
  pa.resize(std::min<size_t>(pa.size(), 230));
  const std::vector<int32_t> pb = model.tokenizer().encode(kText, true);
  const std::vector<int32_t> pc = model.tokenizer().encode("The keeper wrote to", true);
  const std::vector<int32_t> pd = model.tokenizer().encode("A storm broke the great lens", true);
  LightTransferSettings lt;
  lt.mode = LtMode::kRandom;
  lt.seed = 3;
  lt.lazy_fraction = 0.5;
  lt.sink = 4;
  lt.window = 60;
  const int32_t capacity = 512;
  auto arena = KvArena::create_for(model.backend(), c, lt, capacity);
  EXPECT_TRUE(arena.ok()) << arena.error().message;
  auto hybrid = HybridSequence::create(*arena.value(), c, lt, capacity);
  EXPECT_TRUE(hybrid.ok()) << hybrid.error().message;
  SequenceCache a(c, capacity), cc(c, capacity), d(c, capacity);
  SequenceKv* seqs[] = {&a, hybrid.value().get(), &cc, &d};
  const std::vector<int32_t>* prompts[] = {&pa, &pb, &pc, &pd};
  std::vector<int32_t> next(4);
  auto prefill = [&](int i) {
    std::vector<float> logits;
    BatchEntry e{seqs[i], *prompts[i], false};
    const Status s = model.forward({&e, 1}, logits);
    EXPECT_TRUE(s.ok()) << s.message();
    next[i] = sampling::argmax(logits);
  };
  for (int i = 0; i < 3; ++i) prefill(i);
  Steps run;
  const int32_t vocab = c.vocab_size;
  for (int step = 0; step < 40; ++step) {
    if (step == 10) prefill(3);
    std::vector<int> live = {0, 1, 2};
    if (step >= 10) live = {0, 1, 2, 3};
    if (step >= 30) live = {0, 3};
    std::vector<BatchEntry> batch;
    for (int i : live) batch.push_back({seqs[i], {&next[i], 1}, false});
    std::vector<float> logits;
    const Status s = model.forward(batch, logits);
    EXPECT_TRUE(s.ok()) << s.message();
    const std::vector<float>& chooser = feed != nullptr ? feed->logits[step] : logits;
    for (size_t k = 0; k < live.size(); ++k) {
      next[live[k]] = sampling::argmax(
          {chooser.data() + k * static_cast<size_t>(vocab), static_cast<size_t>(vocab)});
    }
    run.logits.push_back(std::move(logits));
    run.batch_sizes.push_back(static_cast<int32_t>(live.size()));
  }
  return run;
}

class CudaGraphs : public ::testing::TestWithParam<kernels::DType> {
 protected:
  void SetUp() override {
    if (testing::shared_model() == nullptr) {
      GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
    }
    std::string why;
    if (cuda_backend("", &why) == nullptr) GTEST_SKIP() << why;
  }
};

TEST_P(CudaGraphs, ReplayEqualsTheRecordedLaunchesBitForBitAndTheDefaultPathToRounding) {
  LoadOptions options;
  options.kv_type = GetParam();
  std::string why;
  auto graphs = cuda_backend("1", &why);
  auto eager = cuda_backend("eager", &why);
  auto plain = cuda_backend("", &why);
  ASSERT_TRUE(graphs && eager && plain) << why;
  auto load = [&](kernels::Backend& b) {
    auto m = LlamaModel::load(gguf_testing::test_model_path(), b, options);
    EXPECT_TRUE(m.ok()) << m.error().message;
    return std::move(m).value();
  };
  auto m_plain = load(*plain);
  auto m_graphs = load(*graphs);
  auto m_eager = load(*eager);
  const Steps reference = scenario(*m_plain, nullptr);
  const Steps with_graphs = scenario(*m_graphs, &reference);
  const Steps recorded = scenario(*m_eager, &reference);
  const int32_t vocab = m_plain->config().vocab_size;

  // Graphs really ran: every signature runs eagerly once, is captured the second time and
  // replayed after; the scenario has a handful of signatures over 40 steps.
  std::printf("%s KV: %lld of 40 decode steps launched as graphs\n",
              GetParam() == kernels::DType::kBF16 ? "bf16" : "f16",
              static_cast<long long>(graphs->graph_launches()));
  EXPECT_GE(graphs->graph_launches(), 20);
  EXPECT_EQ(eager->graph_launches(), 0);

  ASSERT_EQ(with_graphs.logits.size(), recorded.logits.size());
  double worst = 0, scale = 0;
  int rows = 0, argmax_equal = 0;
  for (size_t step = 0; step < recorded.logits.size(); ++step) {
    const std::vector<float>& g = with_graphs.logits[step];
    const std::vector<float>& e = recorded.logits[step];
    const std::vector<float>& p = reference.logits[step];
    ASSERT_EQ(g.size(), e.size());
    ASSERT_EQ(g.size(), p.size());
    int64_t differ = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      differ += g[i] != e[i];
      worst = std::max(worst, static_cast<double>(std::fabs(g[i] - p[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(p[i])));
    }
    EXPECT_EQ(differ, 0) << "step " << step << " (" << with_graphs.batch_sizes[step]
                         << " sequences): a replayed graph differs from its recorded launches";
    for (int32_t r = 0; r < with_graphs.batch_sizes[step]; ++r) {
      const size_t at = static_cast<size_t>(r) * vocab;
      ++rows;
      argmax_equal += sampling::argmax({g.data() + at, static_cast<size_t>(vocab)}) ==
                      sampling::argmax({p.data() + at, static_cast<size_t>(vocab)});
    }
  }
  std::printf(
      "graphs vs default path: max |dlogit| %.5f (logits up to %.2f), argmax equal in %d "
      "of %d rows\n",
      worst, scale, argmax_equal, rows);
  EXPECT_LT(worst, 0.05 * scale);
  EXPECT_GE(argmax_equal, rows * 95 / 100);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaGraphs,
                         ::testing::Values(kernels::DType::kF16, kernels::DType::kBF16),
                         [](const auto& info) {
                           return std::string(info.param == kernels::DType::kBF16 ? "bf16" : "f16");
                         });

}  // namespace
}  // namespace lightserve::model
