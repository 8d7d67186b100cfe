// The model's side of Backend::begin_decode_step / end_decode_step (CUDA graphs of decode steps),
// on the CPU: a backend that forwards every op to the CPU backend and, like the CUDA backend in
// graph mode, asks for decode steps padded to a power of two. The padded rows must change no
// real row's result (same greedy ids, logits within the CPU matmul's row-count tolerance), store
// no K/V, get no attention sequence, and the step must end before anything is read back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/topk.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "sampling/sampler.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

using kernels::AttentionSeq;
using kernels::AttentionShape;
using kernels::Backend;
using kernels::DType;
using kernels::KvView;
using kernels::LazyScore;
using kernels::RopeParams;
using kernels::Weight;
using kernels::WeightView;

// Every op goes to the CPU backend; decode steps are padded, and what happens inside them is
// counted and checked.
class PaddingBackend final : public Backend {
 public:
  PaddingBackend() : cpu_(kernels::make_cpu_backend(2)) {}

  struct Step {
    int64_t rows = 0, padded = 0;
    int64_t embedded = 0, rope_rows = 0, stored_rows = 0, attention_seqs = 0;
    bool ended = false;
  };
  std::vector<Step> steps;
  bool padding = true;

  int64_t begin_decode_step(int64_t rows) override {
    EXPECT_FALSE(in_step_) << "a decode step began inside another";
    if (!padding) return 0;
    int64_t padded = 1;
    while (padded < rows) padded *= 2;
    steps.push_back(Step{rows, padded});
    in_step_ = true;
    return padded;
  }
  void end_decode_step() override {
    EXPECT_TRUE(in_step_) << "end_decode_step without a step";
    in_step_ = false;
    if (!steps.empty()) steps.back().ended = true;
  }

  std::string description() const override { return "padding(" + cpu_->description() + ")"; }
  void* allocate(int64_t bytes) override { return cpu_->allocate(bytes); }
  void deallocate(void* p) override { cpu_->deallocate(p); }
  void upload(void* dst, const void* src, int64_t bytes) override { cpu_->upload(dst, src, bytes); }
  void download(void* dst, const void* src, int64_t bytes) override {
    EXPECT_FALSE(in_step_) << "a result read back before end_decode_step";
    cpu_->download(dst, src, bytes);
  }
  void copy(void* dst, const void* src, int64_t bytes) override { cpu_->copy(dst, src, bytes); }
  // Not host memory, as a GPU: the model downloads its logits (through the padded rows).
  bool host_memory() const override { return false; }
  std::unique_ptr<Weight> make_weight(std::span<const WeightView> parts) override {
    return cpu_->make_weight(parts);
  }
  void matmul(const Weight& w, const float* x, int64_t n, float* y) override {
    cpu_->matmul(w, x, n, y);
  }
  void embed(const Weight& table, std::span<const int32_t> ids, float* out) override {
    if (in_step_) steps.back().embedded += static_cast<int64_t>(ids.size());
    cpu_->embed(table, ids, out);
  }
  void rms_norm(const float* x, const float* weight, int64_t n, int64_t dim, float eps,
                float* y) override {
    cpu_->rms_norm(x, weight, n, dim, eps, y);
  }
  void rope(float* x, std::span<const int32_t> positions, int64_t heads, int64_t head_dim,
            int64_t row_stride, const RopeParams& params) override {
    if (in_step_) steps.back().rope_rows = static_cast<int64_t>(positions.size());
    cpu_->rope(x, positions, heads, head_dim, row_stride, params);
  }
  void add_bias(float* y, const float* bias, int64_t n, int64_t width,
                int64_t row_stride) override {
    cpu_->add_bias(y, bias, n, width, row_stride);
  }
  void swiglu(const float* gate_up, int64_t n, int64_t ff, float* out) override {
    cpu_->swiglu(gate_up, n, ff, out);
  }
  void add(float* y, const float* x, int64_t count) override { cpu_->add(y, x, count); }
  void store_kv(const float* src, int64_t src_stride, int64_t n, int64_t width, uint16_t* dst,
                int64_t dst_stride, DType type) override {
    if (in_step_) steps.back().stored_rows += n;
    cpu_->store_kv(src, src_stride, n, width, dst, dst_stride, type);
  }
  void attention(const float* q, std::span<const AttentionSeq> seqs, const AttentionShape& shape,
                 float* out) override {
    if (in_step_) {
      steps.back().attention_seqs = static_cast<int64_t>(seqs.size());
      for (const AttentionSeq& s : seqs) EXPECT_EQ(s.num_queries, 1);
    }
    cpu_->attention(q, seqs, shape, out);
  }
  float lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n, int32_t w_last,
                   int32_t sink, int32_t window, const AttentionShape& shape, LazyScore score,
                   float* head_ratios) override {
    EXPECT_FALSE(in_step_) << "a prefill op inside a decode step";
    return cpu_->lazy_ratio(q, lse, kv, n, w_last, sink, window, shape, score, head_ratios);
  }
  void copy_rows_f16(const uint16_t* src, int64_t src_stride, int64_t count, int64_t width,
                     uint16_t* dst, int64_t dst_stride) override {
    cpu_->copy_rows_f16(src, src_stride, count, width, dst, dst_stride);
  }
  void copy_runs_f16(std::span<const RowRun> runs, int64_t width) override {
    cpu_->copy_runs_f16(runs, width);
  }
  void argmax_rows(const float* x, int64_t n, int64_t width, int32_t* ids) override {
    EXPECT_FALSE(in_step_) << "ids read back before end_decode_step";
    cpu_->argmax_rows(x, n, width, ids);
  }

 private:
  std::unique_ptr<Backend> cpu_;
  bool in_step_ = false;
};

const char* kPrompts[] = {
    "The lighthouse keeper climbed the stairs",
    "One winter a storm broke the great lens, and for three weeks",
    "Ships passing in the night relied on",
};

// Greedy steps of three sequences (one of them LightTransfer's, paged full and ring lazy
// layers), with the batch changing: all three, then two. Returns every step's logits.
std::vector<std::vector<float>> decode(LlamaModel& model) {
  const LlamaConfig& c = model.config();
  LightTransferSettings lt;
  lt.mode = LtMode::kRandom;  // half the layers lazy, chosen by the seed
  lt.seed = 7;
  lt.lazy_fraction = 0.5;
  lt.sink = 4;
  lt.window = 12;  // the ring wraps within the steps
  auto arena = KvArena::create_for(model.backend(), c, lt, 64);
  EXPECT_TRUE(arena.ok()) << arena.error().message;
  auto hybrid = HybridSequence::create(*arena.value(), c, lt, 64);
  EXPECT_TRUE(hybrid.ok()) << hybrid.error().message;
  SequenceCache s0(c, 64), s1(c, 64);
  SequenceKv* caches[] = {&s0, hybrid.value().get(), &s1};
  std::vector<std::vector<float>> out;
  std::vector<int32_t> next(3);
  for (int i = 0; i < 3; ++i) {
    const std::vector<int32_t> p = model.tokenizer().encode(kPrompts[i], true);
    std::vector<float> logits;
    BatchEntry e{caches[i], p, false};
    EXPECT_TRUE(model.forward({&e, 1}, logits).ok());
    next[i] = sampling::argmax(logits);
  }
  const int32_t vocab = c.vocab_size;
  for (int step = 0; step < 8; ++step) {
    const int live = step < 5 ? 3 : 2;
    std::vector<BatchEntry> batch;
    for (int i = 0; i < live; ++i) batch.push_back({caches[i], {&next[i], 1}, false});
    std::vector<float> logits;
    const Status st = model.forward(batch, logits);
    EXPECT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(logits.size(), static_cast<size_t>(live) * vocab);
    for (int i = 0; i < live; ++i) {
      next[i] = sampling::argmax(
          {logits.data() + static_cast<size_t>(i) * vocab, static_cast<size_t>(vocab)});
    }
    out.push_back(std::move(logits));
  }
  return out;
}

// Two copies of the three prompts' sequences (SequenceCache), each prefilled on its own, and
// the first greedy token of each prompt: the same decode steps then run one way on `first` and
// another way on `second`.
struct Twins {
  std::vector<std::unique_ptr<SequenceCache>> first, second;
  std::vector<int32_t> next;

  // A decode step of every sequence of one side, each fed its next token.
  std::vector<BatchEntry> step(const std::vector<std::unique_ptr<SequenceCache>>& side) {
    std::vector<BatchEntry> batch;
    for (size_t i = 0; i < side.size(); ++i) batch.push_back({side[i].get(), {&next[i], 1}, false});
    return batch;
  }
};

Twins prefill_twins(LlamaModel& model) {
  Twins t;
  for (int i = 0; i < 3; ++i) {
    t.first.push_back(std::make_unique<SequenceCache>(model.config(), 64));
    t.second.push_back(std::make_unique<SequenceCache>(model.config(), 64));
    const std::vector<int32_t> p = model.tokenizer().encode(kPrompts[i], true);
    std::vector<float> logits;
    BatchEntry e1{t.first.back().get(), p, false}, e2{t.second.back().get(), p, false};
    EXPECT_TRUE(model.forward({&e1, 1}, logits).ok());
    EXPECT_TRUE(model.forward({&e2, 1}, logits).ok());
    t.next.push_back(sampling::argmax(logits));
  }
  return t;
}

// The default model loaded on a PaddingBackend.
class DecodeStep : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::shared_model() == nullptr) {
      GTEST_SKIP() << "model not found: " << gguf_testing::test_model_path();
    }
    auto loaded = LlamaModel::load(gguf_testing::test_model_path(), backend);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    model_ = std::move(loaded.value());
  }
  LlamaModel& model() { return *model_; }

  PaddingBackend backend;

 private:
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(DecodeStep, PaddedStepsComputeTheUnpaddedRowsAndStoreNothingForPadding) {
  LlamaModel& model = this->model();
  const int32_t layers = model.config().num_layers;

  backend.padding = false;
  const std::vector<std::vector<float>> plain = decode(model);
  ASSERT_TRUE(backend.steps.empty()) << "prefill or unpadded steps began a decode step";
  backend.padding = true;
  const std::vector<std::vector<float>> padded = decode(model);

  // Only the 8 decode steps were steps (the prefills were not), each ended, padded to 4 or 2.
  ASSERT_EQ(backend.steps.size(), 8u);
  for (size_t i = 0; i < backend.steps.size(); ++i) {
    const PaddingBackend::Step& s = backend.steps[i];
    const int64_t live = i < 5 ? 3 : 2;
    EXPECT_EQ(s.rows, live);
    EXPECT_EQ(s.padded, i < 5 ? 4 : 2);
    EXPECT_TRUE(s.ended);
    EXPECT_EQ(s.embedded, s.padded) << "one embed of every row, padding included";
    EXPECT_EQ(s.rope_rows, s.padded);
    EXPECT_EQ(s.stored_rows, 2 * live * layers) << "K/V stored for padded rows";
    EXPECT_EQ(s.attention_seqs, live) << "attention sequences for padded rows";
  }
  // The real rows: the same greedy tokens, logits equal up to the CPU matmul's dependence on the
  // row count (its blocking may differ between 3 and 4 rows).
  ASSERT_EQ(plain.size(), padded.size());
  double worst = 0, scale = 0;
  for (size_t step = 0; step < plain.size(); ++step) {
    ASSERT_EQ(plain[step].size(), padded[step].size()) << "step " << step;
    for (size_t i = 0; i < plain[step].size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(plain[step][i] - padded[step][i])));
      scale = std::max(scale, static_cast<double>(std::fabs(plain[step][i])));
    }
  }
  std::printf("padded vs unpadded decode steps: max |dlogit| %.6f (logits up to %.2f)\n", worst,
              scale);
  EXPECT_LT(worst, 1e-3 * scale);
}

// forward_argmax through a padded step: ids of the real rows only, read after the step ended.
TEST_F(DecodeStep, ArgmaxOfAPaddedStepReturnsTheRealRows) {
  LlamaModel& model = this->model();
  const int32_t vocab = model.config().vocab_size;
  Twins twins = prefill_twins(model);
  std::vector<int32_t>& next = twins.next;
  for (int step = 0; step < 3; ++step) {
    std::vector<BatchEntry> b1 = twins.step(twins.first), b2 = twins.step(twins.second);
    std::vector<float> logits;
    std::vector<int32_t> ids;
    ASSERT_TRUE(model.forward(b1, logits).ok());
    ASSERT_TRUE(model.forward_argmax(b2, ids).ok());
    ASSERT_EQ(ids.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(ids[i], sampling::argmax({logits.data() + static_cast<size_t>(i) * vocab,
                                          static_cast<size_t>(vocab)}))
          << "step " << step << " row " << i;
    }
    next = ids;
  }
  EXPECT_EQ(backend.steps.size(), 6u);
}

// forward_candidates through a padded step: candidates for the rows that asked (from the real
// rows only, never the padding), whole rows for the others, all read after the step ended.
TEST_F(DecodeStep, CandidatesOfAPaddedStepComeFromTheRealRows) {
  LlamaModel& model = this->model();
  const int32_t vocab = model.config().vocab_size;
  const int32_t wanted[] = {5, 0, 3};  // row 1 comes back whole
  Twins twins = prefill_twins(model);
  std::vector<int32_t>& next = twins.next;
  for (int step = 0; step < 3; ++step) {
    std::vector<BatchEntry> b1 = twins.step(twins.first), b2 = twins.step(twins.second);
    for (int i = 0; i < 3; ++i) b2[static_cast<size_t>(i)].num_candidates = wanted[i];
    std::vector<float> logits, whole;
    std::vector<kernels::Ranked> candidates;
    ASSERT_TRUE(model.forward(b1, logits).ok());
    ASSERT_TRUE(model.forward_candidates(b2, whole, candidates).ok());
    ASSERT_EQ(candidates.size(), 8u);
    ASSERT_EQ(whole.size(), static_cast<size_t>(vocab));
    // The same padded launches: bit-identical rows.
    EXPECT_TRUE(std::equal(whole.begin(), whole.end(), logits.begin() + vocab)) << "step " << step;
    size_t at = 0;
    for (int i : {0, 2}) {
      const float* row = logits.data() + static_cast<size_t>(i) * vocab;
      std::vector<int32_t> order(static_cast<size_t>(vocab));
      for (int32_t v = 0; v < vocab; ++v) order[static_cast<size_t>(v)] = v;
      std::partial_sort(order.begin(), order.begin() + wanted[i], order.end(),
                        [&](int32_t x, int32_t y) {
                          return sampling::ranks_before({x, row[x]}, {y, row[y]});
                        });
      for (int j = 0; j < wanted[i]; ++j, ++at) {
        EXPECT_EQ(candidates[at].id, order[static_cast<size_t>(j)])
            << "step " << step << " row " << i;
        EXPECT_EQ(candidates[at].value, row[order[static_cast<size_t>(j)]]);
      }
      next[i] = candidates[at - static_cast<size_t>(wanted[i])].id;
    }
    next[1] = sampling::argmax({whole.data(), static_cast<size_t>(vocab)});
  }
  EXPECT_EQ(backend.steps.size(), 6u);
  for (const PaddingBackend::Step& s : backend.steps) EXPECT_EQ(s.padded, 4);
}

}  // namespace
}  // namespace lightserve::model
