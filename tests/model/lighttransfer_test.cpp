// LightTransfer identities on the real model (docs/design.md §10): full mode and f = 0 equal the
// plain model bit for bit; a window covering the sequence equals full; the online selection is the
// global top-P; different prompts give different layer maps; memory stays within P + 1
// full-length layers.
#include "model/lighttransfer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "kernels/backend.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "model/llama_model.h"
#include "sampling/sampler.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
using sampling::argmax;
namespace {

TEST(LazySelector, OnlineSelectionIsTheGlobalTopP) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int32_t num_layers = 1 + static_cast<int32_t>(rng() % 40);
    const int32_t num_full = static_cast<int32_t>(rng() % (num_layers + 1));
    std::vector<float> ratios(num_layers);
    // Coarse values so ties happen often: ties go to the higher tie rank (here: layer index).
    for (auto& r : ratios) r = static_cast<float>(rng() % 5) / 4.0f;
    LazySelector selector(num_full, {});
    std::vector<bool> full(num_layers, false);
    int32_t max_full = 0;
    for (int32_t layer = 0; layer < num_layers; ++layer) {
      const auto d = selector.push(layer, ratios[layer]);
      if (d.demoted >= 0) {
        ASSERT_TRUE(full[d.demoted]);
        full[d.demoted] = false;
      }
      full[layer] = d.arrival_full;
      max_full = std::max<int32_t>(
          max_full, static_cast<int32_t>(std::count(full.begin(), full.end(), true)));
    }
    std::vector<int32_t> order(num_layers);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return ratios[a] != ratios[b] ? ratios[a] < ratios[b] : a < b;  // least lazy first
    });
    std::vector<bool> expected(num_layers, false);
    for (int32_t i = 0; i < num_full; ++i) expected[order[i]] = true;
    EXPECT_EQ(full, expected) << "trial " << trial;
    EXPECT_LE(max_full, num_full);
  }
}

TEST(LightTransferSettings, InvalidSettingsAreNamed) {
  LightTransferSettings s;
  s.lazy_fraction = 1.5;
  EXPECT_NE(s.validate(30).message().find("lazy_fraction"), std::string::npos);
  s = {};
  s.window = 0;
  EXPECT_NE(s.validate(30).message().find("window"), std::string::npos);
  s = {};
  s.mode = LtMode::kStatic;
  EXPECT_NE(s.validate(30).message().find("plan"), std::string::npos);
  EXPECT_FALSE(parse_lt_mode("fast").ok());
  EXPECT_EQ(s.num_full_layers(30), 15);
}

TEST(LazyScore, NamesRoundTripAndBadOnesAreNamed) {
  for (LazyScore s : {LazyScore::kMean, LazyScore::kHeadMin, LazyScore::kHeadMinLast}) {
    auto parsed = parse_lazy_score(to_string(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(parsed.value(), s);
  }
  auto bad = parse_lazy_score("max");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("'max'"), std::string::npos);
  EXPECT_NE(bad.error().message.find("head-min"), std::string::npos);
}

TEST(LtPlan, QualityMeasurementsSurviveSaveAndLoad) {
  LtPlan plan;
  plan.model = "m";
  plan.num_layers = 4;
  plan.lazy_fraction = 0.5;
  plan.ranking = {3, 1, 2, 0};
  plan.score = LazyScore::kHeadMinLast;
  plan.validated_fraction = 0.5;
  plan.bound_passkey_points = 3;
  plan.bound_ppl_percent = 1.5;
  plan.passkey_trials = 7;
  plan.sink = 4;
  plan.window = 252;
  plan.ppl_prefix = 1024;
  plan.ppl_length = 2048;
  plan.quality.push_back({"full", "", 0.0, {2048, 4096}, {100.0, 90.0}, 12.5, false});
  plan.quality.push_back(
      {"head-min-last f=0.50", "head-min-last", 0.5, {2048, 4096}, {100.0, 88.0}, 12.6, true});
  const std::string path = ::testing::TempDir() + "/lt_plan_quality.yaml";
  ASSERT_TRUE(plan.save(path).ok());
  auto loaded = LtPlan::load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->score, LazyScore::kHeadMinLast);
  EXPECT_EQ(loaded->validated_fraction, 0.5);
  EXPECT_EQ(loaded->bound_passkey_points, 3);
  EXPECT_EQ(loaded->bound_ppl_percent, 1.5);
  EXPECT_EQ(loaded->passkey_trials, 7);
  EXPECT_EQ(loaded->window, 252);
  EXPECT_EQ(loaded->ppl_length, 2048);
  ASSERT_EQ(loaded->quality.size(), 2u);
  EXPECT_EQ(loaded->quality[1].label, "head-min-last f=0.50");
  EXPECT_EQ(loaded->quality[1].passkey_accuracy, (std::vector<double>{100.0, 88.0}));
  EXPECT_EQ(loaded->quality[1].ppl, 12.6);
  EXPECT_TRUE(loaded->quality[1].within_bound);
  EXPECT_FALSE(loaded->quality[0].within_bound);

  // A plan without the quality section (the older format) loads with none.
  plan.validated_fraction = -1;
  ASSERT_TRUE(plan.save(path).ok());
  loaded = LtPlan::load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_LT(loaded->validated_fraction, 0);
  EXPECT_TRUE(loaded->quality.empty());

  std::ofstream(path) << "num_layers: 2\nlazy_fraction: 0.5\nranking: [1, 0]\nscore: maxi\n";
  auto bad = LtPlan::load(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("maxi"), std::string::npos);
}

TEST(LtPlan, TheShippedPlanIsValidatedForTheDefaultModel) {
  auto plan = LtPlan::load(std::string(LIGHTSERVE_SOURCE_DIR) + "/docs/plans/smollm2-135m.yaml");
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ(plan->num_layers, 30);
  ASSERT_GE(plan->validated_fraction, 0.0);
  EXPECT_EQ(plan->lazy_fraction, plan->validated_fraction);
  // The measurements that chose it: full attention first, the chosen point within the bound,
  // and no larger tried fraction of the chosen score within it with every smaller one.
  ASSERT_FALSE(plan->quality.empty());
  const LtQualityPoint& full = plan->quality.front();
  EXPECT_EQ(full.label, "full");
  bool chosen_found = plan->validated_fraction == 0.0;
  for (const LtQualityPoint& p : plan->quality) {
    if (p.score != to_string(plan->score) || p.lazy_fraction != plan->validated_fraction) continue;
    chosen_found = true;
    EXPECT_TRUE(p.within_bound);
    EXPECT_LE(p.ppl, full.ppl * (1 + plan->bound_ppl_percent / 100) + 1e-9);
    for (size_t i = 0; i < p.passkey_accuracy.size(); ++i)
      EXPECT_GE(p.passkey_accuracy[i], full.passkey_accuracy[i] - plan->bound_passkey_points);
  }
  EXPECT_TRUE(chosen_found);
}

class LightTransferModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = testing::shared_model(); }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  }

  std::vector<int32_t> tokens(const std::string& text) const {
    return model_->tokenizer().encode(text, false, true);
  }

  // Prefill (all logits) then `steps` greedy decode steps; every logit row, in order.
  std::vector<float> run(SequenceKv& kv, const std::vector<int32_t>& prompt, int steps) {
    std::vector<float> all, logits;
    const BatchEntry prefill{&kv, prompt, true};
    EXPECT_TRUE(model_->forward({&prefill, 1}, logits).ok());
    all = logits;
    const int32_t vocab = model_->config().vocab_size;
    for (int i = 0; i < steps; ++i) {
      const int32_t id = argmax(std::span<const float>(logits).last(vocab));
      const BatchEntry entry{&kv, std::span(&id, 1), false};
      Status s = model_->forward({&entry, 1}, logits);
      EXPECT_TRUE(s.ok()) << s.message();
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  }

  std::vector<float> run_plain(const std::vector<int32_t>& prompt, int steps) {
    SequenceCache cache(model_->config(), static_cast<int32_t>(prompt.size()) + steps);
    return run(cache, prompt, steps);
  }

  std::vector<float> run_hybrid(const LightTransferSettings& lt, const std::vector<int32_t>& prompt,
                                int steps, HybridSequence** keep = nullptr) {
    const int32_t capacity = static_cast<int32_t>(prompt.size()) + steps;
    auto arena = KvArena::create_for(model_->backend(), model_->config(), lt, capacity);
    EXPECT_TRUE(arena.ok()) << arena.error().message;
    seq_.reset();  // a sequence must not outlive its arena
    arena_ = std::move(arena).value();
    auto seq = HybridSequence::create(*arena_, model_->config(), lt, capacity);
    EXPECT_TRUE(seq.ok()) << seq.error().message;
    seq_ = std::move(seq).value();
    if (keep) *keep = seq_.get();
    return run(*seq_, prompt, steps);
  }

  static LlamaModel* model_;
  std::unique_ptr<KvArena> arena_;
  std::unique_ptr<HybridSequence> seq_;

  void TearDown() override {
    seq_.reset();  // before its arena
    arena_.reset();
  }
};
LlamaModel* LightTransferModel::model_ = nullptr;

const char* kProse =
    "The old lighthouse stood at the edge of the cliff for more than two hundred years, watching "
    "ships come and go through fog, storms and the long quiet evenings of summer. Its keeper, a "
    "patient woman named Margaret, climbed the spiral staircase every night to clean the great "
    "lens and trim the wick, even after the coast guard installed an automatic lamp. She kept a "
    "notebook in which she wrote down the names of the vessels she saw, the direction of the "
    "wind, the color of the sea at dawn, and anything else that seemed worth remembering.";

const char* kCode =
    "def merge_sort(items):\n    if len(items) <= 1:\n        return items\n    middle = "
    "len(items) // 2\n    left = merge_sort(items[:middle])\n    right = merge_sort(items[middle:])"
    "\n    merged = []\n    i = j = 0\n    while i < len(left) and j < len(right):\n        if "
    "left[i] <= right[j]:\n            merged.append(left[i])\n            i += 1\n        else:\n"
    "            merged.append(right[j])\n            j += 1\n    merged.extend(left[i:])\n    "
    "merged.extend(right[j:])\n    return merged\n\nprint(merge_sort([5, 3, 9, 1, 4, 8, 2]))\n";

TEST_F(LightTransferModel, FullModeAndZeroFractionAreBitIdenticalToThePlainModel) {
  const auto prompt = tokens(kProse);
  const auto plain = run_plain(prompt, 24);
  LightTransferSettings full;
  full.mode = LtMode::kFull;
  EXPECT_EQ(run_hybrid(full, prompt, 24), plain) << "mode full";
  LightTransferSettings zero;
  zero.lazy_fraction = 0.0;  // online mode, every layer kept full
  EXPECT_EQ(run_hybrid(zero, prompt, 24), plain) << "lazy_fraction 0";
}

TEST_F(LightTransferModel, WindowCoveringTheSequenceEqualsFull) {
  const auto prompt = tokens(kProse);
  const auto plain = run_plain(prompt, 24);
  for (LtMode mode : {LtMode::kOnline, LtMode::kStreaming, LtMode::kRandom}) {
    LightTransferSettings lt;
    lt.mode = mode;
    lt.window = 512;  // > prompt + generated tokens: lazy layers keep everything
    const auto hybrid = run_hybrid(lt, prompt, 24);
    ASSERT_EQ(hybrid.size(), plain.size());
    double max_diff = 0;
    for (size_t i = 0; i < plain.size(); ++i)
      max_diff = std::max(max_diff, double(std::abs(hybrid[i] - plain[i])));
    // Bit-identical: a ring that still holds every token is walked exactly like a full view.
    EXPECT_EQ(max_diff, 0.0) << to_string(mode);
  }
}

TEST_F(LightTransferModel, SmallWindowChangesDecodeButNotPrefill) {
  const auto prompt = tokens(kProse);
  const auto plain = run_plain(prompt, 16);
  LightTransferSettings lt;
  lt.mode = LtMode::kStreaming;
  lt.sink = 4;
  lt.window = 16;
  const auto hybrid = run_hybrid(lt, prompt, 16);
  const size_t vocab = model_->config().vocab_size;
  const size_t prefill_values = prompt.size() * vocab;
  // Prefill is exact in every mode; decode reads only sinks + window in lazy layers.
  EXPECT_TRUE(std::equal(plain.begin(), plain.begin() + prefill_values, hybrid.begin()));
  EXPECT_FALSE(
      std::equal(plain.begin() + prefill_values, plain.end(), hybrid.begin() + prefill_values));
  for (float v : hybrid) ASSERT_TRUE(std::isfinite(v));
}

TEST_F(LightTransferModel, DifferentPromptsGetDifferentLayerMaps) {
  LightTransferSettings lt;  // online mode, f = 0.5
  lt.sink = 4;
  lt.window = 24;  // shorter than the prompts, so lazy ratios carry information
  std::vector<std::vector<bool>> maps;
  for (const char* text : {kProse, kCode}) {
    HybridSequence* seq = nullptr;
    const auto prompt = tokens(text);
    run_hybrid(lt, prompt, 1, &seq);
    const memory::LayerMap& map = seq->layer_map();
    EXPECT_TRUE(map.complete());
    EXPECT_EQ(map.num_full_layers(), lt.num_full_layers(model_->config().num_layers));
    // Never more than P + 1 full-length layer caches (P lanes plus the scratch layer).
    EXPECT_LE(seq->peak_full_length_layers(), map.num_full_layers() + 1);
    // The lazy layers are exactly the laziest by measured ratio.
    std::vector<bool> lazy(map.num_layers());
    for (int32_t l = 0; l < map.num_layers(); ++l) lazy[l] = map.is_lazy(l);
    for (int32_t a = 0; a < map.num_layers(); ++a) {
      for (int32_t b = 0; b < map.num_layers(); ++b) {
        if (lazy[a] && !lazy[b]) {
          EXPECT_GE(seq->lazy_ratios()[a], seq->lazy_ratios()[b]);
        }
      }
      EXPECT_GE(seq->lazy_ratios()[a], 0.0f);
      EXPECT_LE(seq->lazy_ratios()[a], 1.0f + 1e-5f);
    }
    maps.push_back(lazy);
  }
  EXPECT_NE(maps[0], maps[1]);
}

TEST_F(LightTransferModel, KvBytesAreThePagesOfEveryLane) {
  LightTransferSettings lt;
  const auto prompt = tokens(std::string(kProse) + kCode);
  HybridSequence* seq = nullptr;
  run_hybrid(lt, prompt, 0, &seq);
  const auto& layout = arena_->layout();
  const auto n = static_cast<int64_t>(prompt.size());
  EXPECT_EQ(seq->kv_bytes(), (layout.full_layers * layout.full_lane_pages(n) +
                              layout.lazy_layers * layout.lazy_lane_pages(n)) *
                                 layout.page_bytes());
  // The peak adds one layer's full-length prompt K/V (the layer being decided).
  EXPECT_EQ(seq->peak_kv_bytes(),
            seq->kv_bytes() + static_cast<int64_t>(prompt.size()) * layout.bytes_per_lane_token);
}

TEST_F(LightTransferModel, ArenaErrorsAreClear) {
  LightTransferSettings lt;
  auto arena = KvArena::create(model_->backend(), model_->config(), lt, 1 << 20, 8192);
  ASSERT_FALSE(arena.ok());
  EXPECT_NE(arena.error().message.find("8192"), std::string::npos);
  auto small = KvArena::create_for(model_->backend(), model_->config(), lt, 100);
  ASSERT_TRUE(small.ok());
  auto first = HybridSequence::create(*small.value(), model_->config(), lt, 100);
  ASSERT_TRUE(first.ok());
  auto second = HybridSequence::create(*small.value(), model_->config(), lt, 100);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("no room"), std::string::npos);
  LightTransferSettings other = lt;
  other.lazy_fraction = 0.25;
  first.value().reset();
  auto mismatch = HybridSequence::create(*small.value(), model_->config(), other, 100);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().message.find("laid out"), std::string::npos);
}

}  // namespace
}  // namespace lightserve::model
