// The engine with the real model (executor::ModelExecutor) and layered prefill (prompts advance a
// few layers per step, in the same forward calls as other requests' decodes): requests batched
// together give, each, exactly the greedy tokens of the same request run alone; an abort frees
// its KV and its sequence in the same step, mid-prefill too; the samples of one prompt that share
// its prefill (forks) equal separate requests; prompt logprobs equal the materialised logits';
// `lightserve bench` runs and prints its table.
#include "executor/model_executor.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/generate.h"
#include "model/hybrid_sequence.h"
#include "model/kv_arena.h"
#include "model/llama_model.h"
#include "scheduler/clock.h"
#include "scheduler/engine.h"

namespace lightserve::executor {
namespace {

namespace fs = std::filesystem;

std::string model_path() {
  if (const char* env = std::getenv("LIGHTSERVE_TEST_MODEL")) return env;
  return LIGHTSERVE_TEST_MODEL;
}

const char* kStory =
    "The old lighthouse keeper walked down to the harbour every morning before sunrise. He "
    "counted the fishing boats, checked the ropes of his own small rowing boat, and wrote the "
    "direction of the wind in a worn leather notebook that had belonged to his father.";
const char* kCode =
    "int gcd(int a, int b) {\n  while (b != 0) {\n    int t = a % b;\n    a = b;\n    b = t;\n  "
    "}\n  return a;\n}\n\nint main() {\n  printf(\"%d\\n\", gcd(84, 36));\n  return 0;\n}\n";
const char* kShortA = "The capital of France is";
const char* kShortB = "List three colors:";

// The engine's timings play no part here.
class ZeroClock final : public scheduler::Clock {
 public:
  double now_seconds() const override { return 0.0; }
};

class ModelExecutorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(model_path())) return;
    backend_ = kernels::make_cpu_backend(0).release();
    auto loaded = model::LlamaModel::load(model_path(), *backend_);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    model_ = std::move(loaded).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete backend_;
    model_ = nullptr;
    backend_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "model not found: " << model_path();
    lt_.sink = 4;
    lt_.window = 32;  // shorter than the long prompts: their layer maps carry information
  }

  std::vector<int32_t> tokens(const char* text) const {
    const auto& tok = model_->tokenizer();
    return tok.encode(text, tok.add_bos_token(), true);
  }

  // The request run alone: its own arena and HybridSequence, model::generate.
  std::vector<int32_t> alone(const std::vector<int32_t>& prompt, int32_t max_tokens) const {
    const int32_t capacity = static_cast<int32_t>(prompt.size()) + max_tokens;
    auto arena = model::KvArena::create_for(model_->backend(), model_->config(), lt_, capacity);
    EXPECT_TRUE(arena.ok()) << arena.error().message;
    auto seq = model::HybridSequence::create(*arena.value(), model_->config(), lt_, capacity);
    EXPECT_TRUE(seq.ok()) << seq.error().message;
    model::GenerateParams params;
    params.max_tokens = max_tokens;
    params.ignore_eos = true;
    params.sampling.temperature = 0.0f;
    auto result = model::generate(*model_, *seq.value(), prompt, params);
    EXPECT_TRUE(result.ok()) << result.error().message;
    return result.ok() ? result.value().tokens : std::vector<int32_t>{};
  }

  struct Setup {
    std::unique_ptr<model::KvArena> arena;
    std::unique_ptr<ModelExecutor> executor;
    std::unique_ptr<ModelDetokenizer> detokenizer;
    ZeroClock clock;
    std::unique_ptr<scheduler::Engine> engine;
    ~Setup() {
      engine.reset();  // gives the KV back before the executor and arena go
      executor.reset();
    }
  };

  // Layered prefill with a step budget of every decode plus 6 layers of the longest prompt, so
  // that prompts advance a few layers per step (and a few forward calls keep the tests quick).
  std::unique_ptr<Setup> make_engine(int32_t context, int32_t num_sequences) const {
    auto s = std::make_unique<Setup>();
    auto arena = model::KvArena::create_for(model_->backend(), model_->config(), lt_, context,
                                            num_sequences);
    EXPECT_TRUE(arena.ok()) << arena.error().message;
    s->arena = std::move(arena).value();
    s->executor = std::make_unique<ModelExecutor>(*model_, *s->arena, lt_);
    s->detokenizer = std::make_unique<ModelDetokenizer>(model_->tokenizer());
    scheduler::SchedulerConfig config;
    config.max_context_tokens = context;
    config.max_running = num_sequences;
    config.layered_prefill = true;
    config.step_budget_token_layers =
        static_cast<int64_t>(num_sequences) * model_->config().num_layers + 6 * context;
    config.audit_kv_every_step = true;
    auto engine = scheduler::Engine::create(config, s->arena->manager(), *s->executor,
                                            *s->detokenizer, s->clock);
    EXPECT_TRUE(engine.ok()) << engine.error().message;
    s->engine = std::move(engine).value();
    return s;
  }

  scheduler::AddResult add(scheduler::Engine& engine, const std::vector<int32_t>& prompt,
                           int32_t max_tokens) const {
    scheduler::RequestParams p;
    p.prompt = prompt;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.sampling.temperature = 0.0f;
    return engine.add(std::move(p));
  }

  static std::vector<bool> lazy_set(const model::HybridSequence& seq) {
    const memory::LayerMap& map = seq.layer_map();
    std::vector<bool> lazy(static_cast<size_t>(map.num_layers()));
    for (int32_t l = 0; l < map.num_layers(); ++l) lazy[static_cast<size_t>(l)] = map.is_lazy(l);
    return lazy;
  }

  static kernels::Backend* backend_;
  static model::LlamaModel* model_;
  model::LightTransferSettings lt_;  // online mode, f = 0.5
};
kernels::Backend* ModelExecutorTest::backend_ = nullptr;
model::LlamaModel* ModelExecutorTest::model_ = nullptr;

struct Streamed {
  std::vector<int32_t> tokens;
  std::optional<scheduler::FinishReason> reason;
};

void collect(scheduler::EventStream& stream, Streamed& out) {
  for (scheduler::RequestEvent& e : stream.drain()) {
    if (e.kind == scheduler::RequestEvent::Kind::kToken) {
      out.tokens.push_back(e.token_id);
    } else {
      out.reason = e.finish_reason;
    }
  }
}

TEST_F(ModelExecutorTest, BatchedRequestsEqualEachRunAlone) {
  const std::vector<std::vector<int32_t>> prompts = {tokens(kStory), tokens(kShortA), tokens(kCode),
                                                     tokens(kShortB)};
  ASSERT_GT(prompts[0].size(), static_cast<size_t>(lt_.sink + lt_.window));
  ASSERT_GT(prompts[2].size(), static_cast<size_t>(lt_.sink + lt_.window));
  ASSERT_LT(prompts[1].size(), static_cast<size_t>(lt_.sink + lt_.window));
  const std::vector<int32_t> max_tokens = {12, 9, 14, 6};  // different: the batch changes shape
  int32_t context = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    context = std::max(context, static_cast<int32_t>(prompts[i].size()) + max_tokens[i]);
  }

  auto s = make_engine(context, 4);
  std::vector<scheduler::AddResult> added;
  for (size_t i = 0; i < prompts.size(); ++i) {
    added.push_back(add(*s->engine, prompts[i], max_tokens[i]));
    ASSERT_TRUE(added.back().ok()) << added.back().error->message;
  }
  std::vector<Streamed> out(prompts.size());
  std::map<size_t, std::vector<bool>> maps;
  int mixed_steps = 0;  // a decode and a prefill stopped between layers in one forward call
  while (s->engine->has_work()) {
    const scheduler::StepSummary step = s->engine->step();
    bool parked = false;
    for (size_t i = 0; i < prompts.size(); ++i) {
      collect(*added[i].events, out[i]);
      const model::HybridSequence* seq = s->executor->sequence(added[i].id);
      if (seq != nullptr && seq->size() > 0 && !maps.count(i)) maps[i] = lazy_set(*seq);
      parked = parked || (seq != nullptr && !seq->pending().empty());
    }
    mixed_steps += step.num_decodes > 0 && parked;
  }
  EXPECT_GT(mixed_steps, 0);
  EXPECT_GE(s->executor->max_batch_entries(), 2);
  EXPECT_EQ(s->executor->num_sequences(), 0);
  EXPECT_EQ(s->arena->manager().num_live_allocations(), 0);

  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    EXPECT_EQ(out[i].reason, scheduler::FinishReason::kLength);
    EXPECT_EQ(out[i].tokens, alone(prompts[i], max_tokens[i]));
  }
  ASSERT_TRUE(maps.count(0) && maps.count(2));
  EXPECT_NE(maps[0], maps[2]) << "the two long prompts chose the same lazy layers";
  // Each prefill's layer map was counted once, when its last layer ran.
  const int32_t num_layers = model_->config().num_layers;
  int64_t lazy_total = 0;
  for (int64_t count : s->executor->lazy_layer_counts()) lazy_total += count;
  EXPECT_EQ(lazy_total,
            static_cast<int64_t>(prompts.size()) * (num_layers - lt_.num_full_layers(num_layers)));
}

TEST_F(ModelExecutorTest, DecodesJoinWhilePrefillsArrive) {
  // A request admitted later prefills in a step where the earlier one decodes: one forward call
  // carries both, and both still match their solo runs.
  const std::vector<int32_t> a = tokens(kStory), b = tokens(kCode);
  const int32_t context = static_cast<int32_t>(std::max(a.size(), b.size())) + 10;
  auto s = make_engine(context, 2);
  scheduler::AddResult ra = add(*s->engine, a, 10);
  ASSERT_TRUE(ra.ok());
  Streamed oa, ob;
  for (int i = 0; i < 100 && oa.tokens.empty(); ++i) {  // a's prefill, a few layers per step
    s->engine->step();
    collect(*ra.events, oa);
  }
  ASSERT_EQ(oa.tokens.size(), 1u);
  scheduler::AddResult rb = add(*s->engine, b, 8);
  ASSERT_TRUE(rb.ok());
  const scheduler::StepSummary mixed = s->engine->step();
  EXPECT_EQ(mixed.num_decodes, 1);
  EXPECT_EQ(mixed.num_prefills, 1);
  const model::HybridSequence* seq_b = s->executor->sequence(rb.id);
  ASSERT_NE(seq_b, nullptr);
  EXPECT_GT(seq_b->pending().layers_done, 0);  // b stopped between layers
  EXPECT_EQ(seq_b->size(), 0);
  while (s->engine->has_work()) {
    s->engine->step();
    collect(*ra.events, oa);
    collect(*rb.events, ob);
  }
  collect(*ra.events, oa);
  collect(*rb.events, ob);
  EXPECT_EQ(oa.tokens, alone(a, 10));
  EXPECT_EQ(ob.tokens, alone(b, 8));
}

TEST_F(ModelExecutorTest, AbortFreesBlocksSlotAndSequenceInTheSameStep) {
  const std::vector<int32_t> a = tokens(kStory), b = tokens(kCode);
  const int32_t context = static_cast<int32_t>(std::max(a.size(), b.size())) + 20;
  auto s = make_engine(context, 2);
  scheduler::AddResult ra = add(*s->engine, a, 20);
  scheduler::AddResult rb = add(*s->engine, b, 20);
  ASSERT_TRUE(ra.ok() && rb.ok());
  Streamed oa, ob;
  for (int i = 0; i < 200 && oa.tokens.size() < 2; ++i) {
    s->engine->step();
    collect(*ra.events, oa);
    collect(*rb.events, ob);
  }
  ASSERT_EQ(oa.tokens.size(), 2u);
  ASSERT_EQ(s->executor->num_sequences(), 2);
  const model::HybridSequence* seq = s->executor->sequence(ra.id);
  ASSERT_NE(seq, nullptr);
  const int64_t held = seq->kv_bytes();
  memory::KvManager& kv = s->arena->manager();
  const int32_t free_pages = kv.num_free_pages();

  s->engine->abort(ra.id);
  const scheduler::StepSummary step = s->engine->step();
  EXPECT_GE(step.num_finished, 1);
  EXPECT_FALSE(s->engine->state_of(ra.id).has_value());
  EXPECT_EQ(s->executor->sequence(ra.id), nullptr);
  EXPECT_EQ(s->executor->num_sequences(), 1);
  EXPECT_EQ(kv.num_live_allocations(), 1);
  const memory::KvLayout& l = kv.layout();
  EXPECT_GT(kv.num_free_pages(), free_pages);
  EXPECT_EQ((kv.num_free_pages() - free_pages) * l.page_bytes(),
            held);  // reserve policy: b does not grow, so every freed byte is a's
  collect(*ra.events, oa);
  EXPECT_EQ(oa.reason, scheduler::FinishReason::kAbort);

  while (s->engine->has_work()) s->engine->step();
  collect(*rb.events, ob);
  EXPECT_EQ(ob.reason, scheduler::FinishReason::kLength);
  EXPECT_EQ(ob.tokens, alone(b, 20));  // the survivor is undisturbed
  EXPECT_EQ(kv.num_live_allocations(), 0);
}

TEST_F(ModelExecutorTest, AbortMidPrefillFreesTheParkedPrompt) {
  const std::vector<int32_t> a = tokens(kStory);
  auto s = make_engine(static_cast<int32_t>(a.size()) + 4, 1);
  scheduler::AddResult ra = add(*s->engine, a, 4);
  ASSERT_TRUE(ra.ok());
  s->engine->step();
  s->engine->step();
  const model::HybridSequence* seq = s->executor->sequence(ra.id);
  ASSERT_NE(seq, nullptr);
  ASSERT_GT(seq->pending().layers_done, 0);
  ASSERT_LT(seq->pending().layers_done, model_->config().num_layers);
  s->engine->abort(ra.id);
  s->engine->step();
  EXPECT_EQ(s->executor->num_sequences(), 0);
  EXPECT_EQ(s->arena->manager().num_live_allocations(), 0);
  Streamed oa;
  collect(*ra.events, oa);
  EXPECT_TRUE(oa.tokens.empty());
  EXPECT_EQ(oa.reason, scheduler::FinishReason::kAbort);
}

TEST_F(ModelExecutorTest, AttachedSequenceFollowsTheAllocationsFootprint) {
  const std::vector<int32_t> prompt = tokens(kStory);
  const int32_t capacity = static_cast<int32_t>(prompt.size()) + 6;
  auto arena = model::KvArena::create_for(model_->backend(), model_->config(), lt_, capacity, 2);
  ASSERT_TRUE(arena.ok()) << arena.error().message;
  memory::KvManager& kv = arena.value()->manager();
  const memory::KvLayout& layout = kv.layout();

  // A full footprint runs plain full attention whatever the settings say (the per-request
  // override), and the sequence neither allocates nor releases.
  auto full_plan = kv.plan_admit(layout.full_footprint(), capacity);
  ASSERT_TRUE(full_plan.has_value());
  memory::KvAllocation full = kv.commit(std::move(full_plan).value());
  const int32_t free_pages = kv.num_free_pages();
  {
    auto seq = model::HybridSequence::attach(*arena.value(), model_->config(), lt_, full);
    ASSERT_TRUE(seq.ok()) << seq.error().message;
    EXPECT_EQ(seq.value()->settings().mode, model::LtMode::kFull);
    model::GenerateParams params;
    params.max_tokens = 6;
    params.ignore_eos = true;
    params.sampling.temperature = 0.0f;
    auto result = model::generate(*model_, *seq.value(), prompt, params);
    ASSERT_TRUE(result.ok()) << result.error().message;
    EXPECT_EQ(seq.value()->layer_map().num_lazy_layers(), 0);
    EXPECT_EQ(kv.num_free_pages(), free_pages);
  }
  EXPECT_EQ(kv.num_live_allocations(), 1);  // still the owner's
  EXPECT_FALSE(full.empty());
  kv.release(std::move(full));

  // A hybrid footprint cannot run mode full or streaming.
  auto hybrid_plan = kv.plan_admit(layout.hybrid_footprint(), capacity);
  ASSERT_TRUE(hybrid_plan.has_value());
  memory::KvAllocation hybrid = kv.commit(std::move(hybrid_plan).value());
  model::LightTransferSettings full_mode = lt_;
  full_mode.mode = model::LtMode::kFull;
  EXPECT_FALSE(
      model::HybridSequence::attach(*arena.value(), model_->config(), full_mode, hybrid).ok());
  EXPECT_TRUE(model::HybridSequence::attach(*arena.value(), model_->config(), lt_, hybrid).ok());
  kv.release(std::move(hybrid));
  memory::KvAllocation empty;
  EXPECT_FALSE(model::HybridSequence::attach(*arena.value(), model_->config(), lt_, empty).ok());
}

// --- `lightserve bench` as a user runs it.

const std::string kBinary = LIGHTSERVE_BINARY_DIR "/lightserve";

// n samples of one prompt share its prefill (scheduler::Engine::add_group): with seeded
// temperature sampling each sample gives exactly the tokens of the same request run on its own,
// with hybrid LightTransfer (a prompt longer than sink + window, so lazy layers are cut) and with
// the full-attention override; the forks hold the parent's layer map, and one prefill ran.
TEST_F(ModelExecutorTest, SamplesSharingOnePrefillEqualSeparateRequests) {
  const std::vector<int32_t> prompt = tokens(kStory);
  ASSERT_GT(prompt.size(), static_cast<size_t>(lt_.sink + lt_.window));
  constexpr int32_t kN = 4, kMaxTokens = 10;
  const int32_t context = static_cast<int32_t>(prompt.size()) + kMaxTokens;
  for (const bool full : {false, true}) {
    SCOPED_TRACE(full ? "full attention" : "hybrid");
    // (The arena is sized in hybrid sequences; a full one takes about twice the pages.)
    auto s = make_engine(context, full ? 2 * kN : kN);
    std::vector<scheduler::RequestParams> group;
    for (int32_t i = 0; i < kN; ++i) {
      scheduler::RequestParams p;
      p.prompt = prompt;
      p.max_tokens = kMaxTokens;
      p.ignore_eos = true;
      p.sampling.temperature = 0.9f;
      p.sampling.seed = 1234 + static_cast<uint64_t>(i);
      if (full) p.footprint = s->arena->layout().full_footprint();
      group.push_back(std::move(p));
    }
    scheduler::AddGroupResult added = s->engine->add_group(group);
    ASSERT_TRUE(added.ok()) << added.error->message;
    std::vector<Streamed> shared(kN);
    std::vector<std::vector<bool>> maps(kN);
    while (s->engine->has_work()) {
      s->engine->step();
      for (int32_t i = 0; i < kN; ++i) {
        collect(*added.members[i].events, shared[i]);
        const model::HybridSequence* seq = s->executor->sequence(added.members[i].id);
        if (seq != nullptr && seq->size() > 0 && maps[i].empty()) maps[i] = lazy_set(*seq);
      }
    }
    EXPECT_EQ(s->engine->stats().num_forks_total, kN - 1);
    EXPECT_EQ(s->engine->stats().num_prefill_tokens_total, static_cast<int64_t>(prompt.size()));
    const int32_t num_lazy = static_cast<int32_t>(std::count(maps[0].begin(), maps[0].end(), true));
    EXPECT_EQ(num_lazy > 0, !full);
    for (int32_t i = 1; i < kN; ++i) EXPECT_EQ(maps[i], maps[0]) << "sample " << i;
    bool differ = false;
    for (int32_t i = 0; i < kN; ++i) {
      // Sample i on its own: the same engine, nothing else running.
      scheduler::AddResult alone = s->engine->add(group[static_cast<size_t>(i)]);
      ASSERT_TRUE(alone.ok());
      Streamed out;
      while (s->engine->has_work()) s->engine->step();
      collect(*alone.events, out);
      ASSERT_EQ(out.tokens.size(), static_cast<size_t>(kMaxTokens));
      EXPECT_EQ(shared[i].tokens, out.tokens) << "sample " << i;
      differ = differ || shared[i].tokens != shared[0].tokens;
    }
    EXPECT_TRUE(differ) << "the seeds gave one output: the identity proves little";
    EXPECT_EQ(s->engine->stats().num_prefill_tokens_total,
              static_cast<int64_t>(prompt.size()) * (kN + 1));
  }
}

// Prompt logprobs (echo with logprobs), reduced row by row during a layered prefill, equal the
// log-softmax of the same prompt's logits materialised whole (LlamaModel::forward with
// all_logits on a sequence of its own); a prompt of more than LlamaModel::kRowChunk tokens
// crosses chunks. A fork of the request gets the same ones.
TEST_F(ModelExecutorTest, PromptLogprobsEqualTheMaterialisedLogits) {
  const std::string text = std::string(kStory) + " " + kCode;
  const std::vector<int32_t> prompt = tokens(text.c_str());
  ASSERT_GT(prompt.size(), static_cast<size_t>(model::LlamaModel::kRowChunk));
  const int32_t context = static_cast<int32_t>(prompt.size()) + 2;
  constexpr int32_t kTop = 3;

  // Reference: every row's logits at once.
  auto arena = model::KvArena::create_for(model_->backend(), model_->config(), lt_, context);
  ASSERT_TRUE(arena.ok()) << arena.error().message;
  auto seq = model::HybridSequence::create(*arena.value(), model_->config(), lt_, context);
  ASSERT_TRUE(seq.ok()) << seq.error().message;
  std::vector<float> all;
  const model::BatchEntry entry{seq.value().get(), prompt, /*all_logits=*/true};
  ASSERT_TRUE(model_->forward(std::span<const model::BatchEntry>(&entry, 1), all).ok());
  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  ASSERT_EQ(all.size(), prompt.size() * vocab);

  auto s = make_engine(context, 2);
  std::vector<scheduler::RequestParams> group(2);
  for (scheduler::RequestParams& p : group) {
    p.prompt = prompt;
    p.max_tokens = 2;
    p.prompt_logprobs = kTop;
  }
  scheduler::AddGroupResult added = s->engine->add_group(group);
  ASSERT_TRUE(added.ok()) << added.error->message;
  while (s->engine->has_work()) s->engine->step();
  EXPECT_EQ(s->engine->stats().num_forks_total, 1);
  std::vector<std::vector<scheduler::TokenLogprobs>> got;
  for (const scheduler::AddResult& m : added.members) {
    std::vector<scheduler::RequestEvent> events = m.events->drain();
    ASSERT_FALSE(events.empty());
    got.push_back(events.front().prompt_logprobs);
    for (size_t i = 1; i < events.size(); ++i) EXPECT_TRUE(events[i].prompt_logprobs.empty());
  }
  ASSERT_EQ(got[0].size(), prompt.size() - 1);
  double worst = 0;
  for (size_t t = 1; t < prompt.size(); ++t) {
    const std::span<const float> row(all.data() + (t - 1) * vocab, vocab);
    const scheduler::TokenLogprobs want = scheduler::token_logprobs(row, prompt[t], kTop);
    const scheduler::TokenLogprobs& have = got[0][t - 1];
    // The same float computation of the same row: equal up to the last bits (the chunked output
    // matmul runs fewer rows at once).
    worst = std::max(worst, static_cast<double>(std::fabs(have.logprob - want.logprob)));
    ASSERT_EQ(have.top.size(), static_cast<size_t>(kTop));
    for (int32_t k = 0; k < kTop; ++k) {
      EXPECT_EQ(have.top[k].token_id, want.top[k].token_id) << "token " << t;
      EXPECT_NEAR(have.top[k].logprob, want.top[k].logprob, 1e-4) << "token " << t;
    }
    EXPECT_EQ(got[1][t - 1].logprob, have.logprob) << "the fork's copy, token " << t;
  }
  EXPECT_LT(worst, 1e-4);
}

TEST_F(ModelExecutorTest, BenchCommandPrintsItsTable) {
  if (!fs::exists(kBinary)) GTEST_SKIP() << "lightserve binary absent: " << kBinary;
  const fs::path json =
      fs::temp_directory_path() / ("lightserve_bench_" + std::to_string(::getpid()) + ".json");
  const std::string command = kBinary + " bench -q --model " + model_path() +
                              " --num-prompts 4 --input-len 64 --output-len 8 --kv-budget 8000000"
                              " --window 32 --max-running 4 --step-budget 400 --compare --json " +
                              json.string() + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  for (const char* field :
       {"requests/s", "output tokens/s", "total tokens/s", "peak concurrent", "TTFT p50/p90/p99",
        "TPOT p50/p90/p99", "prefill steps", "decode-only steps", "hybrid / full"}) {
    EXPECT_NE(out.find(field), std::string::npos) << field << " missing from:\n" << out;
  }
  std::ifstream in(json);
  ASSERT_TRUE(in.good()) << "no JSON written";
  const nlohmann::json j = nlohmann::json::parse(in);
  fs::remove(json);
  ASSERT_EQ(j["runs"].size(), 2u);
  for (const auto& run : j["runs"]) {
    EXPECT_EQ(run["num_completed"], 4);
    EXPECT_EQ(run["output_tokens"], 32);
    EXPECT_EQ(run["step_budget_token_layers"], 400);
    // 4 prompts × 64 tokens × 30 layers at most 400 token-layers a step: layered, many steps.
    EXPECT_EQ(run["prefill_token_layers"], 4 * 64 * 30);
    EXPECT_GE(run["prefill_steps"]["num_steps"], 4 * 64 * 30 / 400);
    // Greedy, --device-sampling on (the default): every token from its row's best candidate.
    EXPECT_EQ(run["candidate_rows"], 32);
    EXPECT_EQ(run["whole_rows"], 0);
  }
  EXPECT_TRUE(j.contains("ratios"));
  EXPECT_EQ(j["device_sampling"], "on");
}

}  // namespace
}  // namespace lightserve::executor
