// The daemon's core in-process, with the real model: prepare() checks, drain, abort, and the
// Prometheus metrics after a known workload (counters and histogram counts as expected, gauges
// back at idle).
#include "serving/serving_core.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "tests/support/gguf_writer.h"

namespace lightserve::serving {
namespace {

using scheduler::ErrorKind;
using scheduler::FinishReason;
using scheduler::RequestEvent;

// Sample lines of a Prometheus text page, keyed by "name{labels}" (labels as printed).
std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

// The value of the one sample of `name` whose labels contain every `label` (0 when none).
double sample(const std::map<std::string, double>& m, const std::string& name,
              std::vector<std::string> labels = {}) {
  for (const auto& [key, value] : m) {
    if (key.rfind(name, 0) != 0) continue;
    const std::string rest = key.substr(name.size());
    if (!rest.empty() && rest[0] != '{') continue;
    bool all = true;
    for (const std::string& l : labels) all = all && rest.find(l) != std::string::npos;
    if (all) return value;
  }
  return 0;
}

class ServingCoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = model::gguf_testing::test_model_path();
    if (!std::filesystem::exists(path)) return;
    ServeConfig config;
    config.model_path = path;
    config.kv_budget_bytes = 64ll << 20;
    config.context = 512;
    config.max_prompt_tokens = 400;
    config.max_tokens_limit = 300;
    config.default_max_tokens = 8;
    config.threads = 2;
    // Half the layers lazy: a slot then holds 15 lanes, so the streaming override (30 lazy
    // layers, 2 slots) fits this small arena; at the shipped default (f = 0.2, 6 lanes per slot)
    // it would need 5 of its 4 slots.
    config.lighttransfer.lazy_fraction = 0.5;
    auto started = ServingCore::start(config, nullptr);
    ASSERT_TRUE(started.ok()) << started.error().message;
    engine_ = std::move(started).value().release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }
  void SetUp() override {
    if (engine_ == nullptr)
      GTEST_SKIP() << "no model at " << model::gguf_testing::test_model_path();
  }

  static GenerateInput greedy(std::string text, int32_t max_tokens) {
    GenerateInput in;
    in.prompt_text = std::move(text);
    in.max_tokens = max_tokens;
    in.sampling.temperature = 0;
    in.ignore_eos = true;
    return in;
  }
  // Runs `in` to its finish; the events in order.
  static std::vector<RequestEvent> run(const GenerateInput& in) {
    scheduler::RequestParams params;
    auto error = engine_->prepare(in, params);
    EXPECT_FALSE(error) << error->message;
    auto added = engine_->submit(std::move(params));
    EXPECT_TRUE(added.ok()) << added.error->message;
    if (!added.ok()) return {};
    std::vector<RequestEvent> events;
    while (events.empty() || events.back().kind != RequestEvent::Kind::kFinished) {
      auto e = added.events->wait_pop(std::chrono::seconds(60));
      if (!e) break;
      events.push_back(std::move(*e));
    }
    return events;
  }
  // Polls the metrics until the gauges show an idle engine (they are published after each step).
  static std::map<std::string, double> idle_metrics() {
    std::map<std::string, double> m;
    for (int i = 0; i < 200; ++i) {
      m = parse_metrics(engine_->render_metrics());
      if (sample(m, "lightserve_num_requests_running") == 0 &&
          sample(m, "lightserve_kv_cache_usage_perc") == 0 && engine_->num_in_flight() == 0) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return m;
  }

  static ServingCore* engine_;
};
ServingCore* ServingCoreTest::engine_ = nullptr;

TEST_F(ServingCoreTest, PrepareNamesTheProblem) {
  struct Case {
    GenerateInput input;
    const char* message;
    ErrorKind kind = ErrorKind::kInvalidArgument;
  };
  std::vector<Case> cases;
  cases.push_back({GenerateInput{}, "no prompt"});
  {
    GenerateInput in = greedy("hi", 4);
    in.prompt_ids = std::vector<int32_t>{1, 2};
    cases.push_back({in, "exactly one"});
  }
  cases.push_back({greedy("", 4), "the prompt is empty"});
  {
    GenerateInput in = greedy("x", 4);
    in.prompt_text.reset();
    in.messages = std::vector<model::ChatMessage>{};
    cases.push_back({in, "messages is empty"});
  }
  cases.push_back({greedy(std::string(3000, 'a') + " b", 4), "over the limit of 400",
                   ErrorKind::kOutOfRange});  // a prompt that does not fit (gRPC OUT_OF_RANGE)
  cases.push_back({greedy("hello", 0), "max_tokens must be >= 1"});
  cases.push_back({greedy("hello", 301), "max_tokens 301 is over the limit of 300"});
  for (const Case& c : cases) {
    scheduler::RequestParams params;
    auto error = engine_->prepare(c.input, params);
    ASSERT_TRUE(error.has_value()) << c.message;
    EXPECT_EQ(error->kind, c.kind) << c.message;
    EXPECT_NE(error->message.find(c.message), std::string::npos) << error->message;
  }
  // The engine's own checks come back from submit(): over the context.
  scheduler::RequestParams params;
  ASSERT_FALSE(engine_->prepare(greedy(std::string(1500, 'a'), 300), params));
  params.prompt.resize(300, params.prompt.back());
  auto added = engine_->submit(params);
  ASSERT_FALSE(added.ok());
  EXPECT_EQ(added.error->kind, ErrorKind::kOutOfRange);
  EXPECT_NE(added.error->message.find("exceeds the model context of 512"), std::string::npos)
      << added.error->message;
}

TEST_F(ServingCoreTest, ChatAndOverridesRun) {
  GenerateInput chat;
  chat.messages = std::vector<model::ChatMessage>{{"user", "What is 2+2?"}};
  chat.max_tokens = 3;
  chat.sampling.temperature = 0;
  chat.logprobs = 2;
  std::vector<RequestEvent> events = run(chat);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, RequestEvent::Kind::kFinished);
  ASSERT_GE(events.size(), 2u);
  ASSERT_TRUE(events[0].logprobs.has_value());
  EXPECT_LE(events[0].logprobs->logprob, 0.0f);
  ASSERT_EQ(events[0].logprobs->top.size(), 2u);
  EXPECT_EQ(events[0].logprobs->top[0].token_id, events[0].token_id);  // greedy = the top one
  for (const LightTransferOverride mode :
       {LightTransferOverride::kFull, LightTransferOverride::kStreaming,
        LightTransferOverride::kServerDefault}) {
    GenerateInput in = greedy("The capital of France is", 3);
    in.lighttransfer = mode;
    events = run(in);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().finish_reason, FinishReason::kLength) << static_cast<int>(mode);
  }
}

TEST_F(ServingCoreTest, MetricsAfterAKnownWorkload) {
  const auto before = parse_metrics(engine_->render_metrics());
  const int kRequests = 3, kTokens = 5;
  int64_t prompt_tokens = 0;
  for (int i = 0; i < kRequests; ++i) {
    std::vector<RequestEvent> events =
        run(greedy("Request number " + std::to_string(i) + " says hello", kTokens));
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().finish_reason, FinishReason::kLength);
    EXPECT_EQ(events.back().timings.num_generated_tokens, kTokens);
    prompt_tokens += events.back().timings.num_prompt_tokens;
  }
  // One refusal at admission: over the arena / context.
  scheduler::RequestParams too_long;
  too_long.prompt.assign(600, 1);
  too_long.max_tokens = 1;
  ASSERT_FALSE(engine_->submit(too_long).ok());

  const auto after = idle_metrics();
  auto delta = [&](const std::string& name, std::vector<std::string> labels = {}) {
    return sample(after, name, labels) - sample(before, name, labels);
  };
  EXPECT_EQ(delta("lightserve_request_success_total", {"finished_reason=\"length\""}), kRequests);
  EXPECT_EQ(delta("lightserve_generation_tokens_total"), kRequests * kTokens);
  EXPECT_EQ(delta("lightserve_prompt_tokens_total"), prompt_tokens);
  EXPECT_EQ(delta("lightserve_prefill_tokens_total"), prompt_tokens);  // no preemption, n = 1
  EXPECT_EQ(delta("lightserve_e2e_request_latency_seconds_count"), kRequests);
  EXPECT_EQ(delta("lightserve_time_to_first_token_seconds_count"), kRequests);
  EXPECT_EQ(delta("lightserve_inter_token_latency_seconds_count"), kRequests * (kTokens - 1));
  EXPECT_EQ(delta("lightserve_request_generation_tokens_sum"), kRequests * kTokens);
  EXPECT_EQ(delta("lightserve_admission_rejections_total"), 1);
  // Every prefill served round(f·L) layers lazily (these prompts are shorter than the window, but
  // the lazy set is still chosen and counted).
  const int32_t num_layers = engine_->model_info().num_layers;
  double lazy = 0;
  for (int32_t l = 0; l < num_layers; ++l) {
    lazy += delta("lightserve_lazy_layer_selected_total", {"layer=\"" + std::to_string(l) + "\""});
  }
  const int32_t lazy_per_request =
      num_layers - engine_->lighttransfer().num_full_layers(num_layers);
  EXPECT_EQ(lazy, kRequests * lazy_per_request);
  EXPECT_EQ(sample(after, "lightserve_num_requests_running"), 0);
  EXPECT_EQ(sample(after, "lightserve_num_requests_waiting"), 0);
  EXPECT_EQ(sample(after, "lightserve_kv_cache_usage_perc"), 0);
  EXPECT_EQ(sample(after, "lightserve_kv_cache_usage_by_kind_perc", {"kind=\"full\""}), 0);
  EXPECT_EQ(sample(after, "lightserve_kv_cache_usage_by_kind_perc", {"kind=\"lazy\""}), 0);
  EXPECT_EQ(sample(after, "lightserve_cache_config_info",
                   {"num_pages=\"" + std::to_string(engine_->capacity().num_pages) + "\""}),
            1);
}

TEST_F(ServingCoreTest, AbortGivesTheKvBack) {
  scheduler::RequestParams params;
  ASSERT_FALSE(engine_->prepare(greedy("Tell me a long story about a dragon", 250), params));
  auto added = engine_->submit(std::move(params));
  ASSERT_TRUE(added.ok());
  auto first = added.events->wait_pop(std::chrono::seconds(60));  // it is running
  ASSERT_TRUE(first.has_value());
  auto used = [] { return engine_->snapshot().num_used_pages; };
  for (int i = 0; i < 100 && used() == 0; ++i) {  // published after the step that emitted it
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GT(used(), 0);
  engine_->abort(added.id);
  std::optional<RequestEvent> e;
  while ((e = added.events->wait_pop(std::chrono::seconds(60))) &&
         e->kind != RequestEvent::Kind::kFinished) {
  }
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->finish_reason, FinishReason::kAbort);
  const auto m = idle_metrics();
  EXPECT_EQ(sample(m, "lightserve_kv_cache_usage_perc"), 0);
  EXPECT_EQ(engine_->snapshot().num_used_pages, 0);
  EXPECT_EQ(engine_->snapshot().num_full_layer_pages, 0);
  EXPECT_EQ(engine_->snapshot().num_lazy_layer_pages, 0);
}

// Last: the engine stays draining.
TEST_F(ServingCoreTest, ZDrainRefusesNewRequests) {
  EXPECT_TRUE(engine_->ready());
  engine_->begin_drain();
  EXPECT_FALSE(engine_->ready());
  scheduler::RequestParams params;
  ASSERT_FALSE(engine_->prepare(greedy("hello", 2), params));
  auto added = engine_->submit(params);
  ASSERT_FALSE(added.ok());
  EXPECT_EQ(added.error->kind, ErrorKind::kUnavailable);
}

}  // namespace
}  // namespace lightserve::serving
