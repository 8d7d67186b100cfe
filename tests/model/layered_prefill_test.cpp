// Layered prefill (LlamaModel::forward over layer ranges, the engine's budget stage): a prompt
// prefilled a few layers per call, in the same forward calls as another prompt's layer chunks and
// a third sequence's decodes, gives bit-identical logits, layer maps and lazy ratios to its
// whole-pass prefill, and so does everything decoded after it; in modes full, test and streaming.
// Misuse (a range that does not resume where the pending tokens stopped, a sequence twice) is
// refused before any state changes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "model/lighttransfer.h"
#include "model/llama_model.h"
#include "sampling/sampler.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
using sampling::argmax;
namespace {

const char* kProse =
    "The old lighthouse stood at the edge of the cliff for more than two hundred years, watching "
    "ships come and go through fog, storms and the long quiet evenings of summer. Its keeper kept "
    "a notebook of the vessels she saw.";
const char* kCode =
    "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\nprint(gcd(84, 36))\n";
const char* kShort = "List three colors of the rainbow:";

// Bit patterns, so that NaN (a lazy ratio no mode measured) equals NaN.
std::vector<uint32_t> bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

std::vector<bool> lazy_set(const HybridSequence& seq) {
  const memory::LayerMap& map = seq.layer_map();
  std::vector<bool> lazy(static_cast<size_t>(map.num_layers()));
  for (int32_t l = 0; l < map.num_layers(); ++l) lazy[static_cast<size_t>(l)] = map.is_lazy(l);
  return lazy;
}

// What one sequence produced: its prefill's logits (every prompt token), then one row per decode.
struct Trace {
  std::vector<float> prefill_logits;
  std::vector<std::vector<float>> decode_logits;
  std::vector<bool> lazy;
  std::vector<float> ratios;
  int32_t peak_full_length_layers = 0;
  int32_t num_full_layers = 0;
};

class LayeredPrefill : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = testing::shared_model(); }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
  }

  std::vector<int32_t> tokens(const char* text) const {
    return model_->tokenizer().encode(text, false, true);
  }
  int32_t num_layers() const { return model_->config().num_layers; }
  int32_t vocab() const { return model_->config().vocab_size; }

  static LightTransferSettings settings(LtMode mode) {
    LightTransferSettings lt;
    lt.mode = mode;
    lt.sink = 4;
    lt.window = 12;  // shorter than the prompts: lazy ratios and lazy caches carry information
    return lt;
  }

  static void record_map(const HybridSequence& seq, Trace& t) {
    t.lazy = lazy_set(seq);
    t.ratios = seq.lazy_ratios();
    t.peak_full_length_layers = seq.peak_full_length_layers();
    t.num_full_layers = seq.layer_map().num_full_layers();
  }

  // The sequence alone: one whole-pass prefill (all logits), then `steps` greedy decodes.
  Trace alone(const LightTransferSettings& lt, const std::vector<int32_t>& prompt, int steps) {
    const int32_t capacity = static_cast<int32_t>(prompt.size()) + steps;
    auto arena = KvArena::create_for(model_->backend(), model_->config(), lt, capacity);
    EXPECT_TRUE(arena.ok()) << arena.error().message;
    auto seq = HybridSequence::create(*arena.value(), model_->config(), lt, capacity);
    EXPECT_TRUE(seq.ok()) << seq.error().message;
    Trace t;
    const BatchEntry prefill{seq.value().get(), prompt, true};
    Status s = model_->forward({&prefill, 1}, t.prefill_logits);
    EXPECT_TRUE(s.ok()) << s.message();
    record_map(*seq.value(), t);
    std::vector<float> logits(t.prefill_logits.end() - vocab(), t.prefill_logits.end());
    for (int i = 0; i < steps; ++i) {
      const int32_t id = argmax(logits);
      const BatchEntry entry{seq.value().get(), std::span(&id, 1), false};
      s = model_->forward({&entry, 1}, logits);
      EXPECT_TRUE(s.ok()) << s.message();
      t.decode_logits.push_back(logits);
    }
    return t;
  }

  // prompts[0] and prompts[1] prefill in random layer chunks, the second starting two calls after
  // the first, while prompts[2] (prefilled whole first) decodes one token in each of the first
  // six calls; the two decode `steps` tokens once their prefill is done. Entries go to each call
  // in a random order.
  std::vector<Trace> layered(const LightTransferSettings& lt,
                             const std::vector<std::vector<int32_t>>& prompts, int steps,
                             uint32_t seed) {
    const int32_t n = static_cast<int32_t>(prompts.size());
    EXPECT_EQ(n, 3);
    int32_t capacity = 0;
    for (const auto& p : prompts) capacity = std::max(capacity, static_cast<int32_t>(p.size()));
    capacity += 64;  // the decoder decodes in every call
    auto arena = KvArena::create_for(model_->backend(), model_->config(), lt, capacity, n);
    EXPECT_TRUE(arena.ok()) << arena.error().message;
    struct Running {
      std::unique_ptr<HybridSequence> seq;
      std::span<const int32_t> prompt;
      int32_t start_call = 0;
      int32_t layers_done = 0;
      int32_t decodes_left = 0;
      int32_t next_token = -1;  // -1: still prefilling
      Trace trace;
    };
    std::vector<Running> run(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      auto seq = HybridSequence::create(*arena.value(), model_->config(), lt, capacity);
      EXPECT_TRUE(seq.ok()) << seq.error().message;
      run[i].seq = std::move(seq).value();
      run[i].prompt = prompts[static_cast<size_t>(i)];
      run[i].start_call = i == 1 ? 2 : 0;
      run[i].decodes_left = steps;
    }
    run[2].decodes_left = 6;  // the decoder joins the first six calls
    Running& decoder = run[2];
    {
      const BatchEntry whole{decoder.seq.get(), decoder.prompt, true};
      EXPECT_TRUE(model_->forward({&whole, 1}, decoder.trace.prefill_logits).ok());
      record_map(*decoder.seq, decoder.trace);
      decoder.next_token =
          argmax(std::span<const float>(decoder.trace.prefill_logits).last(vocab()));
    }
    std::mt19937 rng(seed);
    std::vector<float> logits;
    auto busy = [&](const Running& r) { return r.next_token < 0 || r.decodes_left > 0; };
    for (int32_t call = 0; busy(run[0]) || busy(run[1]); ++call) {
      EXPECT_LT(call, 200) << "no progress";
      if (call >= 200) break;
      std::vector<BatchEntry> batch;
      std::vector<Running*> owners;
      for (Running& r : run) {
        if (call < r.start_call || !busy(r)) continue;
        if (r.next_token >= 0) {
          batch.push_back({r.seq.get(), std::span(&r.next_token, 1), false});
        } else {
          const int32_t chunk = 1 + static_cast<int32_t>(rng() % 8);
          const int32_t end = std::min(num_layers(), r.layers_done + chunk);
          batch.push_back({r.seq.get(), r.prompt, /*all_logits=*/true, r.layers_done, end});
        }
        owners.push_back(&r);
      }
      for (size_t i = batch.size(); i > 1; --i) {  // a random order
        const size_t j = rng() % i;
        std::swap(batch[i - 1], batch[j]);
        std::swap(owners[i - 1], owners[j]);
      }
      const Status s = model_->forward(batch, logits);
      EXPECT_TRUE(s.ok()) << s.message();
      if (!s.ok()) break;
      size_t row = 0;
      for (size_t k = 0; k < batch.size(); ++k) {
        Running& r = *owners[k];
        const BatchEntry& e = batch[k];
        if (e.layer_end != BatchEntry::kAllLayers && e.layer_end < num_layers()) {
          r.layers_done = e.layer_end;
          EXPECT_EQ(r.seq->pending().layers_done, r.layers_done);
          EXPECT_EQ(r.seq->size(), 0);
          continue;
        }
        const size_t rows = e.all_logits ? e.tokens.size() : 1;
        const auto first = logits.begin() + static_cast<std::ptrdiff_t>(row * vocab());
        const std::vector<float> mine(first, first + static_cast<std::ptrdiff_t>(rows * vocab()));
        row += rows;
        if (r.next_token < 0) {
          r.trace.prefill_logits = mine;
          record_map(*r.seq, r.trace);
          EXPECT_TRUE(r.seq->pending().empty());
        } else {
          r.trace.decode_logits.push_back(mine);
          --r.decodes_left;
        }
        r.next_token = argmax(std::span<const float>(mine).last(vocab()));
      }
      EXPECT_EQ(row * vocab(), logits.size());
    }
    std::vector<Trace> traces;
    for (Running& r : run) traces.push_back(std::move(r.trace));
    return traces;
  }

  void expect_same(const Trace& got, const Trace& want, const std::string& what) {
    SCOPED_TRACE(what);
    EXPECT_TRUE(got.prefill_logits == want.prefill_logits) << "prefill logits differ";
    ASSERT_EQ(got.decode_logits.size(), want.decode_logits.size());
    for (size_t i = 0; i < want.decode_logits.size(); ++i) {
      EXPECT_TRUE(got.decode_logits[i] == want.decode_logits[i]) << "decode step " << i;
    }
    EXPECT_EQ(got.lazy, want.lazy);
    EXPECT_EQ(bits(got.ratios), bits(want.ratios));
    EXPECT_LE(got.peak_full_length_layers, got.num_full_layers + 1);
  }

  static LlamaModel* model_;
};
LlamaModel* LayeredPrefill::model_ = nullptr;

TEST_F(LayeredPrefill, LayerChunksInterleavedWithDecodesEqualTheWholePass) {
  const std::vector<std::vector<int32_t>> prompts = {tokens(kProse), tokens(kCode), tokens(kShort)};
  const int steps = 2;
  uint32_t seed = 1;
  for (LtMode mode : {LtMode::kFull, LtMode::kOnline, LtMode::kStreaming}) {
    const LightTransferSettings lt = settings(mode);
    const std::string what = std::string(to_string(mode)) + ", seed " + std::to_string(seed);
    const std::vector<Trace> got = layered(lt, prompts, steps, seed++);
    expect_same(got[0], alone(lt, prompts[0], steps), what + ", prose");
    expect_same(got[1], alone(lt, prompts[1], steps), what + ", code");
    expect_same(got[2], alone(lt, prompts[2], 6), what + ", decoder");
    if (mode == LtMode::kOnline) {
      EXPECT_NE(got[0].lazy, got[1].lazy) << "the two prompts chose the same lazy layers";
    }
  }
}

TEST_F(LayeredPrefill, MisuseIsRefusedBeforeAnyStateChanges) {
  const std::vector<int32_t> prompt = tokens(kShort);
  const int32_t n = static_cast<int32_t>(prompt.size());
  SequenceCache cache(model_->config(), n + 1);
  SequenceCache other(model_->config(), n + 1);
  std::vector<float> logits = {1.0f};
  auto refused = [&](std::vector<BatchEntry> batch, const std::string& message) {
    const Status s = model_->forward(batch, logits);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(message), std::string::npos) << s.message();
  };
  refused({{&cache, prompt, false, 0, num_layers() + 1}}, "not a range");
  refused({{&cache, prompt, false, 3, 3}}, "not a range");
  refused({{&cache, prompt, false, 2, 5}}, "have run 0 layers");

  const BatchEntry first{&cache, prompt, false, 0, 5};
  ASSERT_TRUE(model_->forward({&first, 1}, logits).ok());
  EXPECT_TRUE(logits.empty());  // no entry reached the last layer
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.pending().layers_done, 5);
  const int64_t hidden_count = static_cast<int64_t>(n) * model_->config().hidden_dim;
  ASSERT_GE(cache.pending().hidden.capacity(), hidden_count * 4);
  auto parked_now = [&] {
    std::vector<float> v(static_cast<size_t>(hidden_count));
    model_->backend().download(v.data(), cache.pending().hidden.get<float>(), hidden_count * 4);
    return v;
  };
  const std::vector<float> parked = parked_now();

  refused({{&cache, prompt, false}}, "have run 5 layers");                  // a whole pass
  refused({{&cache, prompt, false, 4, 9}}, "have run 5 layers");            // a gap or overlap
  refused({{&cache, std::span(prompt).first(2), false, 5, 9}}, "pending");  // other tokens
  refused({{&other, prompt, false}, {&cache, prompt, false, 5, 9}, {&cache, prompt, false, 5, 9}},
          "twice");
  EXPECT_EQ(cache.pending().layers_done, 5);
  EXPECT_EQ(other.size(), 0);
  EXPECT_TRUE(parked_now() == parked);

  // The refusals changed nothing: finishing the prefill matches a whole pass (plain model).
  const BatchEntry rest{&cache, prompt, false, 5, BatchEntry::kAllLayers};
  ASSERT_TRUE(model_->forward({&rest, 1}, logits).ok());
  EXPECT_EQ(cache.size(), n);
  EXPECT_TRUE(cache.pending().empty());
  EXPECT_TRUE(cache.pending().hidden.empty());
  std::vector<float> whole;
  const BatchEntry all{&other, prompt, false};
  ASSERT_TRUE(model_->forward({&all, 1}, whole).ok());
  EXPECT_TRUE(logits == whole);
}

}  // namespace
}  // namespace lightserve::model
