// PrefillTee: one forward pass prefilling several LightTransfer modes leaves each sequence exactly
// as its own prefill would (layer map, lazy ratios, and the logits of every later decode step).
#include "model/prefill_tee.h"

#include <gtest/gtest.h>

#include <cmath>
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

struct Owned {
  std::unique_ptr<KvArena> arena;
  std::unique_ptr<HybridSequence> seq;
};

Owned make(const LlamaModel& model, const LightTransferSettings& lt, int32_t capacity) {
  Owned o;
  auto arena = KvArena::create_for(model.backend(), model.config(), lt, capacity);
  EXPECT_TRUE(arena.ok()) << arena.error().message;
  o.arena = std::move(arena).value();
  auto seq = HybridSequence::create(*o.arena, model.config(), lt, capacity);
  EXPECT_TRUE(seq.ok()) << seq.error().message;
  o.seq = std::move(seq).value();
  return o;
}

std::vector<LightTransferSettings> modes() {
  std::vector<LightTransferSettings> out;
  for (auto [mode, f] : {std::pair{LtMode::kFull, 0.0}, std::pair{LtMode::kOnline, 0.5},
                         std::pair{LtMode::kOnline, 0.25}, std::pair{LtMode::kStreaming, 1.0},
                         std::pair{LtMode::kRandom, 0.5}}) {
    LightTransferSettings lt;
    lt.mode = mode;
    lt.lazy_fraction = f;
    lt.sink = 4;
    lt.window = 24;  // far shorter than the prompt: the cuts matter
    lt.w_last = 8;
    lt.seed = 7;
    out.push_back(lt);
  }
  return out;
}

TEST(PrefillTee, EachSequenceEndsAsItsOwnPrefillWouldLeaveIt) {
  LlamaModel* model = testing::shared_model();
  if (model == nullptr) GTEST_SKIP() << "no model";
  const std::vector<int32_t> prompt = model->tokenizer().encode(
      "The pass key is 48213. Remember it. The grass is green. The sky is blue. The sun is "
      "yellow. Here we go. There and back again. The grass is green. The sky is blue. What is "
      "the pass key? The pass key is",
      true);
  ASSERT_GT(prompt.size(), 40u);
  const int32_t capacity = static_cast<int32_t>(prompt.size()) + 8;
  const int32_t vocab = model->config().vocab_size;

  std::vector<Owned> alone, teed;
  std::vector<SequenceKv*> children;
  for (const LightTransferSettings& lt : modes()) {
    alone.push_back(make(*model, lt, capacity));
    teed.push_back(make(*model, lt, capacity));
    children.push_back(teed.back().seq.get());
  }
  // Separate prefills, and one prefill through the tee.
  std::vector<std::vector<float>> alone_logits(alone.size());
  for (size_t i = 0; i < alone.size(); ++i) {
    const BatchEntry e{alone[i].seq.get(), prompt, false};
    ASSERT_TRUE(model->forward({&e, 1}, alone_logits[i]).ok());
  }
  PrefillTee tee(children, model->config().num_heads);
  std::vector<float> tee_logits;
  const BatchEntry e{&tee, prompt, false};
  ASSERT_TRUE(model->forward({&e, 1}, tee_logits).ok());
  EXPECT_EQ(tee_logits, alone_logits[0]);  // the prefill is exact in every mode

  std::vector<std::string> maps;
  for (size_t i = 0; i < alone.size(); ++i) {
    SCOPED_TRACE("mode " + std::to_string(i));
    EXPECT_EQ(teed[i].seq->size(), static_cast<int32_t>(prompt.size()));
    EXPECT_EQ(alone_logits[i], tee_logits);
    std::string map;
    for (int32_t l = 0; l < model->config().num_layers; ++l) {
      EXPECT_EQ(teed[i].seq->layer_map().is_lazy(l), alone[i].seq->layer_map().is_lazy(l)) << l;
      map += teed[i].seq->layer_map().is_lazy(l) ? 'L' : 'F';
    }
    maps.push_back(map);
    const auto& ra = alone[i].seq->lazy_ratios();
    const auto& rt = teed[i].seq->lazy_ratios();
    ASSERT_EQ(ra.size(), rt.size());
    for (size_t l = 0; l < ra.size(); ++l) {
      if (std::isnan(ra[l])) {
        EXPECT_TRUE(std::isnan(rt[l]));
      } else {
        EXPECT_EQ(ra[l], rt[l]) << "layer " << l;
      }
    }
    // Decode: the same token into both, logits bit-identical at every step.
    int32_t token = argmax(std::span<const float>(tee_logits.data(), vocab));
    for (int step = 0; step < 6; ++step) {
      std::vector<float> la, lt;
      const BatchEntry ea{alone[i].seq.get(), std::span<const int32_t>(&token, 1), false};
      const BatchEntry et{teed[i].seq.get(), std::span<const int32_t>(&token, 1), false};
      ASSERT_TRUE(model->forward({&ea, 1}, la).ok());
      ASSERT_TRUE(model->forward({&et, 1}, lt).ok());
      ASSERT_EQ(la, lt) << "step " << step;
      token = argmax(std::span<const float>(la.data(), vocab));
    }
  }
  // The modes really differ (otherwise the test proves little).
  EXPECT_NE(maps[0], maps[1]);
  EXPECT_NE(maps[1], maps[2]);
  EXPECT_NE(maps[1], maps[4]);
}

TEST(PrefillTee, RefusesASequenceThatIsNotEmpty) {
  LlamaModel* model = testing::shared_model();
  if (model == nullptr) GTEST_SKIP() << "no model";
  LightTransferSettings lt;
  lt.mode = LtMode::kFull;
  Owned a = make(*model, lt, 16), b = make(*model, lt, 16);
  const std::vector<int32_t> one{1};
  std::vector<float> logits;
  const BatchEntry e{b.seq.get(), one, false};
  ASSERT_TRUE(model->forward({&e, 1}, logits).ok());
  PrefillTee tee({a.seq.get(), b.seq.get()}, model->config().num_heads);
  EXPECT_FALSE(tee.check_append(1).ok());
}

}  // namespace
}  // namespace lightserve::model
