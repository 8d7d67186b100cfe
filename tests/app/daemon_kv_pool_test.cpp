// The one KV page pool through the real daemon at its defaults (512 MiB KV budget, the model's
// 8,192-token context, max_running 64, reserve policy): 64 concurrent 32-token requests from 64
// gRPC clients all run at once (max_running is the bound; the old split of the arena into 5 lazy
// slots ran 5 at a time), and lightserve_kv_cache_usage_perc and its per-kind breakdown show the
// pages they hold (docs/design.md §5).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lightserve/v1/generation.grpc.pb.h"
#include "tests/support/daemon_process.h"
#include "tests/support/http_test_client.h"

namespace lightserve::testing {
namespace {

namespace v1 = ::lightserve::v1;
using Clock = std::chrono::steady_clock;

constexpr int kClients = 64;
constexpr int kPromptTokens = 8;
constexpr int kMaxTokens = 24;  // 8 + 24 = 32 tokens a request

class DaemonKvPool : public DaemonSuite<DaemonKvPool> {
 public:
  static std::vector<std::string> daemon_args() {
    return {"--model", LIGHTSERVE_TEST_MODEL, "--threads", "2"};  // everything else default
  }

  // The value of the sample of `name` whose labels include `label`, or NaN.
  static double labelled(const std::string& text, const std::string& name,
                         const std::string& label) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(name + "{", 0) == 0 && line.find(label) != std::string::npos) {
        return std::strtod(line.substr(line.rfind(' ') + 1).c_str(), nullptr);
      }
    }
    return std::nan("");
  }
};

TEST_F(DaemonKvPool, SixtyFourShortRequestsRunAtOnceAndTheGaugeShowsThem) {
  auto channel = grpc::CreateChannel(daemon_->grpc_target(), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);

  // The capacity report: more whole 8K sequences hybrid than full (5 vs 2 at f = 0.5, 3 vs 2 at
  // the shipped plan's f = 0.2), but 32-token ones cost what full attention costs.
  v1::GetServerInfoResponse info;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetServerInfo(&context, {}, &info).ok());
  }
  EXPECT_EQ(info.capacity().budget_bytes(), 512ll << 20);
  EXPECT_EQ(info.capacity().context_tokens(), 8192);
  EXPECT_GT(info.capacity().max_hybrid_sequences(), info.capacity().max_full_sequences());
  const int32_t full_layers = info.lighttransfer().num_full_layers();
  const int32_t layers = full_layers + info.lighttransfer().num_lazy_layers();
  ASSERT_EQ(layers, 30);
  ASSERT_LT(full_layers, layers);
  EXPECT_EQ(info.limits().max_running(), kClients);
  ASSERT_GE(info.capacity().sequences_size(), 1);
  const v1::SequenceCapacity& short_ones = info.capacity().sequences(0);
  EXPECT_EQ(short_ones.tokens(), 32);
  EXPECT_EQ(short_ones.hybrid_pages(), short_ones.full_pages());
  EXPECT_GE(short_ones.max_hybrid_sequences(), kClients);
  const int64_t num_pages = info.capacity().num_pages();

  std::atomic<int> num_ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      v1::GenerateRequest request;
      for (int t = 0; t < kPromptTokens; ++t) request.mutable_token_ids()->add_ids(100 + c + t);
      request.set_max_tokens(kMaxTokens);
      request.set_ignore_eos(true);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(600));
      auto reader = stub->GenerateStream(&context, request);
      v1::GenerateStreamResponse message;
      int tokens = 0;
      while (reader->Read(&message)) tokens += message.tokens_size();
      if (reader->Finish().ok() && tokens == kMaxTokens) ++num_ok;
    });
  }

  // Watch the gauges until every request ran at once (or the requests are done).
  double most_running = 0, kv_at_most = 0, full_at_most = 0, lazy_at_most = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(300);
  while (Clock::now() < deadline && most_running < kClients) {
    const std::string text = HttpConnection(port()).request("GET", "/metrics").body;
    const double running = metric_value(text, "lightserve_num_requests_running").value_or(0);
    if (running > most_running) {
      most_running = running;
      kv_at_most = metric_value(text, "lightserve_kv_cache_usage_perc").value_or(-1);
      full_at_most = labelled(text, "lightserve_kv_cache_usage_by_kind_perc", "kind=\"full\"");
      lazy_at_most = labelled(text, "lightserve_kv_cache_usage_by_kind_perc", "kind=\"lazy\"");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(num_ok.load(), kClients);
  EXPECT_EQ(most_running, kClients) << "requests running at once";
  // Reserve policy: each holds 32 tokens = 2 pages in each of its 30 layers, full or lazy alike.
  const double expected = static_cast<double>(kClients * 30 * 2) / static_cast<double>(num_pages);
  EXPECT_NEAR(kv_at_most, expected, 1e-9);
  EXPECT_NEAR(full_at_most + lazy_at_most, kv_at_most, 1e-9);
  EXPECT_NEAR(full_at_most, expected * full_layers / layers, 1e-9);  // P full, L - P lazy
  std::printf("[kv pool] %g requests ran at once; KV gauge %.4f (full %.4f + lazy %.4f)\n",
              most_running, kv_at_most, full_at_most, lazy_at_most);
  EXPECT_TRUE(wait_idle(30));
}

}  // namespace
}  // namespace lightserve::testing
