// LightTransfer's lazy ratios on real prompts against an independent float64 reference of the
// formula (docs/design.md §4, docs/quality.md): for every layer and every query head, the mean over
// the scored queries of softmax(q·k · scale) mass on the sinks and the recent window, computed
// from the model's own queries and keys (recorded during the prefill, rounded to f16 as the cache
// and the attention round them) with a full softmax in double — not from the log-sum-exp the
// kernel reuses. Checked for the three scores (mean, head-min, head-min-last): per-head ratios,
// the layer score, and the lazy set each score picks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "model/prefill_tee.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

using kernels::fp16_to_fp32;
using kernels::fp32_to_fp16;

float round_f16(float x) {
  return fp16_to_fp32(fp32_to_fp16(x));
}

// Passes a prefill through to `child` and keeps every layer's keys and queries (CPU backend: the
// pointers are host memory).
class Recorder final : public SequenceKv {
 public:
  // kv_width: the K values of one token (kv heads × head_dim); its rows sit `src_stride` apart
  // inside the fused QKV buffer, so the last one ends kv_width past the last row's start.
  Recorder(SequenceKv* child, int32_t num_layers, int64_t kv_width)
      : child_(child), kv_width_(kv_width), k_(num_layers), q_(num_layers) {}
  int32_t size() const override { return child_->size(); }
  int32_t capacity() const override { return child_->capacity(); }
  Status check_append(int32_t n) const override { return child_->check_append(n); }
  LayerKv store_layer(kernels::Backend& backend, int32_t layer, const float* k, const float* v,
                      int64_t src_stride, int32_t n, kernels::DType kv_type) override {
    k_stride_ = src_stride;
    k_[layer].assign(k, k + static_cast<size_t>(n - 1) * src_stride + kv_width_);
    return child_->store_layer(backend, layer, k, v, src_stride, n, kv_type);
  }
  void finish_layer(kernels::Backend& backend, int32_t layer, const float* q,
                    const kernels::AttentionShape& shape, int32_t n) override {
    shape_ = shape;
    q_[layer].assign(q, q + static_cast<size_t>(n) * shape.q_stride);
    child_->finish_layer(backend, layer, q, shape, n);
  }
  void advance(int32_t n) override { child_->advance(n); }

  // [head] the reference ratio of `layer` over the last `w_last` of n queries.
  std::vector<double> head_ratios(int32_t layer, int32_t n, int32_t w_last, int32_t sink,
                                  int32_t window) const {
    const kernels::AttentionShape& s = shape_;
    const int group = s.heads / s.kv_heads;
    const int32_t first = std::max(0, n - w_last);
    std::vector<double> out(s.heads, 0.0);
    std::vector<double> scores(n);
    for (int32_t qi = first; qi < n; ++qi) {
      for (int h = 0; h < s.heads; ++h) {
        const float* q = q_[layer].data() + static_cast<size_t>(qi) * s.q_stride + h * s.head_dim;
        double max_score = -1e300;
        for (int32_t t = 0; t <= qi; ++t) {
          const float* k =
              k_[layer].data() + static_cast<size_t>(t) * k_stride_ + (h / group) * s.head_dim;
          double dot = 0;
          for (int d = 0; d < s.head_dim; ++d)
            dot += static_cast<double>(round_f16(q[d])) * static_cast<double>(round_f16(k[d]));
          scores[t] = dot * s.scale;
          max_score = std::max(max_score, scores[t]);
        }
        double sum = 0, kept = 0;
        for (int32_t t = 0; t <= qi; ++t) {
          const double p = std::exp(scores[t] - max_score);
          sum += p;
          if (t < sink || t >= n - window) kept += p;
        }
        out[h] += kept / sum / (n - first);
      }
    }
    return out;
  }

 private:
  SequenceKv* child_;
  int64_t kv_width_ = 0;
  std::vector<std::vector<float>> k_, q_;
  int64_t k_stride_ = 0;
  kernels::AttentionShape shape_;
};

struct Owned {
  std::unique_ptr<KvArena> arena;
  std::unique_ptr<HybridSequence> seq;
};

std::string passkey_prompt() {
  std::string text =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
      "it.\n";
  for (int i = 0; i < 12; ++i)
    text += "The grass is green. The sky is blue. The sun is yellow. Here we go. ";
  text += "\nThe pass key is 71829. Remember it. 71829 is the pass key.\n";
  for (int i = 0; i < 12; ++i)
    text += "The grass is green. The sky is blue. The sun is yellow. Here we go. ";
  return text + "\nWhat is the pass key? The pass key is";
}

std::string prose_prompt() {
  return "The committee met on a Tuesday to discuss the budget for the coming year. Several "
         "members raised concerns about the cost of the new library building, which had grown by "
         "a third since the first estimate. The treasurer explained that the price of steel and "
         "of labour had both risen, and that the architect had added a reading room on the roof. "
         "After a long debate the committee voted to keep the reading room but to delay the "
         "garden until the following spring, when the accounts would be clearer. The chair "
         "thanked everyone and closed the meeting at nine. What did the committee decide about "
         "the garden? It decided";
}

TEST(LazyRatioReference, EveryLayerAndHeadMatchesFloat64OnRealPrompts) {
  LlamaModel* model = testing::shared_model();
  if (model == nullptr) GTEST_SKIP() << "no model";
  const LlamaConfig& config = model->config();
  const int32_t layers = config.num_layers, heads = config.num_heads;
  for (const std::string& text : {passkey_prompt(), prose_prompt()}) {
    const std::vector<int32_t> prompt = model->tokenizer().encode(text, true);
    const int32_t n = static_cast<int32_t>(prompt.size());
    ASSERT_GT(n, 100);
    std::vector<Owned> seqs;
    std::vector<SequenceKv*> children;
    const std::vector<LazyScore> scores{LazyScore::kMean, LazyScore::kHeadMin,
                                        LazyScore::kHeadMinLast};
    LightTransferSettings lt;
    lt.mode = LtMode::kOnline;
    lt.lazy_fraction = 0.5;
    lt.sink = 4;
    lt.window = n / 4;  // the lazy layers keep about a quarter of the prompt
    lt.w_last = 16;
    for (LazyScore score : scores) {
      lt.score = score;
      Owned o;
      auto arena = KvArena::create_for(model->backend(), config, lt, n + 1);
      ASSERT_TRUE(arena.ok()) << arena.error().message;
      o.arena = std::move(arena).value();
      auto seq = HybridSequence::create(*o.arena, config, lt, n + 1);
      ASSERT_TRUE(seq.ok()) << seq.error().message;
      o.seq = std::move(seq).value();
      children.push_back(o.seq.get());
      seqs.push_back(std::move(o));
    }
    PrefillTee tee(children, heads);
    Recorder recorder(&tee, layers, static_cast<int64_t>(config.num_kv_heads) * config.head_dim);
    const BatchEntry entry{&recorder, prompt, false};
    std::vector<float> logits;
    ASSERT_TRUE(model->forward({&entry, 1}, logits).ok());

    for (size_t si = 0; si < scores.size(); ++si) {
      const HybridSequence& seq = *seqs[si].seq;
      const int32_t w_last = scores[si] == LazyScore::kHeadMinLast ? 1 : lt.w_last;
      std::vector<double> want_score(layers);
      double worst = 0;
      for (int32_t l = 0; l < layers; ++l) {
        const std::vector<double> want = recorder.head_ratios(l, n, w_last, lt.sink, lt.window);
        for (int h = 0; h < heads; ++h) {
          const double got = seq.head_lazy_ratios()[static_cast<size_t>(l) * heads + h];
          worst = std::max(worst, std::fabs(got - want[h]));
          EXPECT_NEAR(got, want[h], 2e-5) << "layer " << l << " head " << h << " score " << si;
        }
        want_score[l] = scores[si] == LazyScore::kMean
                            ? std::accumulate(want.begin(), want.end(), 0.0) / heads
                            : *std::min_element(want.begin(), want.end());
        EXPECT_NEAR(seq.lazy_ratios()[l], want_score[l], 2e-5) << "layer " << l << " score " << si;
      }
      std::printf("  %d tokens, score %zu: worst per-head |kernel - float64| %.2e\n", n, si, worst);
      // The lazy set is the reference's laziest round(f·L) layers, unless the reference itself
      // has a near-tie at the boundary.
      std::vector<int32_t> order(layers);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return want_score[a] > want_score[b]; });
      const int32_t num_lazy = layers - lt.num_full_layers(layers);
      if (want_score[order[num_lazy - 1]] - want_score[order[num_lazy]] < 1e-4) {
        std::printf("  near-tie at the boundary: lazy set not compared\n");
        continue;
      }
      for (int32_t i = 0; i < layers; ++i) {
        EXPECT_EQ(seq.layer_map().is_lazy(order[i]), i < num_lazy)
            << "layer " << order[i] << " score " << si;
      }
    }
    // The head-aware scores are never lazier than the paper's mean.
    for (int32_t l = 0; l < layers; ++l)
      EXPECT_LE(seqs[1].seq->lazy_ratios()[l], seqs[0].seq->lazy_ratios()[l] + 1e-6f)
          << "layer " << l;
  }
}

}  // namespace
}  // namespace lightserve::model
