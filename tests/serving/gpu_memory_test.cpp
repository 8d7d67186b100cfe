// The KV arena sized from --gpu-memory-utilization (serving/gpu_memory.h): the arithmetic with the
// numbers an H100 reports, its errors, and the clear refusal on a backend without device memory.
#include "serving/gpu_memory.h"

#include <gtest/gtest.h>

#include <string>

#include "serving/serve_config.h"
#include "serving/serving_core.h"

namespace lightserve::serving {
namespace {

constexpr int64_t kGiB = 1ll << 30;

// An H100 80GB (79.2 GiB as cudaMemGetInfo reports it) after a llama-3-8b-shaped model's f16
// weights (15 GiB) and a profiling forward (1.5 GiB), with 0.5 GiB held by the CUDA context.
GpuMemoryInputs h100() {
  GpuMemoryInputs in;
  in.utilization = 0.9;
  in.total_bytes = 85'031'714'816;
  in.weight_bytes = 15 * kGiB;
  in.activation_peak_bytes = 3 * kGiB / 2;
  in.margin_bytes = kGiB;
  in.free_bytes = in.total_bytes - kGiB / 2 - in.weight_bytes - in.activation_peak_bytes;
  return in;
}

TEST(GpuMemory, ArenaIsTheFractionLessWeightsActivationsAndMargin) {
  const GpuMemoryInputs in = h100();
  auto plan = plan_gpu_memory(in);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  const int64_t allowed = static_cast<int64_t>(0.9 * static_cast<double>(in.total_bytes));
  EXPECT_EQ(plan.value().allowed_bytes, allowed);
  EXPECT_EQ(plan.value().kv_budget_bytes, allowed - 15 * kGiB - 3 * kGiB / 2 - kGiB);
  // What is left free after the arena still holds the margin.
  EXPECT_GE(in.free_bytes - plan.value().kv_budget_bytes, in.margin_bytes);
  const std::string line = plan.value().describe();
  for (const char* part : {"0.900 of", "weights 15", "activation peak 1.5", "margin 1", "KV arena",
                           "free before it"}) {
    EXPECT_NE(line.find(part), std::string::npos) << part << " in " << line;
  }
}

TEST(GpuMemory, FullUtilizationIsBoundedByWhatIsFree) {
  // F = 1 asks for the CUDA context's half GiB too: refused, naming the largest F that fits.
  GpuMemoryInputs in = h100();
  in.utilization = 1.0;
  auto plan = plan_gpu_memory(in);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().message.find("does not fit"), std::string::npos) << plan.error().message;
  EXPECT_NE(plan.error().message.find("at most 0.99"), std::string::npos) << plan.error().message;
  // ... and that F is accepted.
  in.utilization = 0.99;
  EXPECT_TRUE(plan_gpu_memory(in).ok());
}

TEST(GpuMemory, AnotherProcessOnTheGpuShrinksWhatFits) {
  GpuMemoryInputs in = h100();
  in.free_bytes -= 40 * kGiB;  // someone else holds 40 GiB
  auto plan = plan_gpu_memory(in);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().message.find("other processes"), std::string::npos);
  // The largest F it names fits.
  const std::string& m = plan.error().message;
  const double largest = std::stod(m.substr(m.find("at most ") + 8));
  in.utilization = largest;
  EXPECT_TRUE(plan_gpu_memory(in).ok()) << largest;
  in.utilization = largest + 0.002;
  EXPECT_FALSE(plan_gpu_memory(in).ok()) << largest;
}

TEST(GpuMemory, TooSmallAFractionSaysHowMuchIsNeeded) {
  GpuMemoryInputs in = h100();
  in.utilization = 0.2;  // 15.8 GiB: less than weights + activations + margin (17.5 GiB)
  auto plan = plan_gpu_memory(in);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().message.find("leave nothing for the KV cache; it must be above 0.22"),
            std::string::npos)
      << plan.error().message;
  // A model larger than the GPU.
  in.weight_bytes = 90 * kGiB;
  in.utilization = 1.0;
  auto huge = plan_gpu_memory(in);
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().message.find("does not fit this GPU"), std::string::npos);
}

TEST(GpuMemory, FractionOutOfRangeNamesTheKey) {
  for (double f : {0.0, -0.5, 1.01}) {
    GpuMemoryInputs in = h100();
    in.utilization = f;
    auto plan = plan_gpu_memory(in);
    ASSERT_FALSE(plan.ok()) << f;
    EXPECT_NE(plan.error().message.find("engine.gpu_memory_utilization: must be in (0, 1]"),
              std::string::npos);
  }
}

TEST(GpuMemory, MarginHoldsOnePromptsPrefillScratch) {
  model::LlamaConfig c;  // llama-3-8b's attention shape
  c.num_layers = 32;
  c.hidden_dim = 4096;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  // 8192 tokens: hidden states 128 MiB, one layer's K/V 32 MiB, log-sum-exps 1 MiB, reserve.
  EXPECT_EQ(gpu_memory_margin(c, 8192), (128ll << 20) + (32ll << 20) + (1ll << 20) + (256ll << 20));
}

TEST(GpuMemory, CpuBackendIsRefusedClearly) {
  ServeConfig config;
  config.load_format = "dummy";
  config.shape = "layers=2,hidden=64,heads=4,kv_heads=2,ffn=128,vocab=300,context=256";
  config.dummy_type = "f32";
  config.device = "cpu";
  config.threads = 1;
  config.gpu_memory_utilization = 0.9;
  config.lighttransfer.plan = "none";
  auto started = ServingCore::start(config, nullptr);
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.error().message.find(
                "engine.gpu_memory_utilization: needs a GPU backend (model.device cuda)"),
            std::string::npos)
      << started.error().message;
}

}  // namespace
}  // namespace lightserve::serving
