// The forward pass on K-quant and Q5 files against llama.cpp (goldens from
// scripts/goldens/kquant_goldens.py): a tiny random LLaMA in the per-tensor types of the pinned
// llama-quantize's Q4_K_M, Q5_K_M, Q6_K, Q5_0, Q5_1, Q8_0 and Q4_0 presets, random block bytes
// generated into the build tree (kquant_tiny/ of tests/fixtures/make_test_fixtures.cpp), and
// llama.cpp's logits on each file (1 thread, default repacking, flash attention off, one batch
// per prompt).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

using json = nlohmann::json;
const std::string kGolden = LIGHTSERVE_GOLDEN_DIR;
const std::string kFixtures = LIGHTSERVE_FIXTURE_DIR;

// What "like llama.cpp" means here, measured. Both sides quantize every matmul's input to 8 bits
// per block (Q8_0 / Q8_1 for the legacy types, Q8_K for the K-quants) and keep an f16 KV cache,
// so they agree to float rounding (a few 1e-6 on logits of standard deviation ~4) until some
// value lands on the other side of an int8 rounding boundary; on this model one such flip moves
// all later logits of that position by up to ~0.2. llama.cpp is not consistent with itself at
// that level: on the same files its repacked and plain kernels (--no-repack) differ by up to
// 0.125 (Q4_0) and 5e-6 (Q4_K_M) (recorded per file in the golden as llamacpp_spread; 2 threads
// vs 1 gives identical logits). So:
//  - every checked logit (all of the last position's, 16 probes at every other position) within
//    kLogitTolerance, llama.cpp's own repack spread rounded up;
//  - at least kMinTightFraction of the positions within kTightTolerance: float rounding only, so
//    a systematic error (a wrong scale, min or bit layout) that stays under kLogitTolerance still
//    fails (measured: 69 to 71 of 71 positions per file);
//  - the argmax equal wherever llama.cpp's top-2 gap exceeds 2 * kLogitTolerance.
constexpr double kLogitTolerance = 0.25;
constexpr double kTightTolerance = 1e-3;
constexpr double kMinTightFraction = 0.75;

json read_golden() {
  std::ifstream in(kGolden + "/kquant_tiny.json");
  std::ostringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

class KquantGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(KquantGolden, MatchesLlamaCpp) {
  const std::string type = GetParam();
  const json golden = read_golden();
  const json& file = golden["files"][type];
  std::string why;
  auto backend = kernels::make_backend("cpu", 1, &why);
  ASSERT_NE(backend, nullptr) << why;
  auto loaded =
      LlamaModel::load(ModelSource(kFixtures + "/" + file["file"].get<std::string>()), *backend);
  ASSERT_TRUE(loaded.ok()) << type << ": " << loaded.error().message;
  LlamaModel& model = *loaded.value();
  const int32_t vocab = model.config().vocab_size;
  ASSERT_EQ(vocab, 260);

  double worst_last = 0, worst = 0;
  int argmax_checked = 0, positions = 0, tight = 0;
  const auto& prompts = golden["prompts"];
  for (size_t p = 0; p < prompts.size(); ++p) {
    const auto ids = prompts[p].get<std::vector<int32_t>>();
    const json& run = file["runs"][p];
    const std::vector<float> logits = testing::prompt_logits(model, ids, /*all_positions=*/true);
    ASSERT_EQ(logits.size(), ids.size() * static_cast<size_t>(vocab));

    const auto want = run["last_logits"].get<std::vector<double>>();
    const float* last = logits.data() + (ids.size() - 1) * static_cast<size_t>(vocab);
    double max_last = 0;
    int32_t at = 0;
    for (int32_t v = 0; v < vocab; ++v) {
      const double diff = std::abs(last[v] - want[v]);
      if (diff > max_last) max_last = diff, at = v;
    }
    EXPECT_LE(max_last, kLogitTolerance)
        << type << " prompt " << p << " (" << ids.size() << " tokens), token " << at << ": ours "
        << last[at] << ", llama.cpp " << want[at];
    worst_last = std::max(worst_last, max_last);
    RecordProperty("max_last_logit_error_" + std::to_string(p), std::to_string(max_last));

    const auto argmax = run["argmax"].get<std::vector<int32_t>>();
    const auto gaps = run["top2_gap"].get<std::vector<double>>();
    const auto& probe_ids = run["probe_ids"];
    const auto& probe_logits = run["probe_logits"];
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* row = logits.data() + i * static_cast<size_t>(vocab);
      double max_error = i + 1 == ids.size() ? max_last : 0;
      for (size_t k = 0; k < probe_ids[i].size(); ++k) {
        const int32_t id = probe_ids[i][k].get<int32_t>();
        const double diff = std::abs(row[id] - probe_logits[i][k].get<double>());
        max_error = std::max(max_error, diff);
        EXPECT_LE(diff, kLogitTolerance)
            << type << " prompt " << p << " @" << i << " token " << id << ": ours " << row[id]
            << ", llama.cpp " << probe_logits[i][k];
      }
      worst = std::max(worst, max_error);
      ++positions;
      tight += max_error <= kTightTolerance ? 1 : 0;
      if (gaps[i] <= 2 * kLogitTolerance) continue;
      const auto got = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      EXPECT_EQ(got, argmax[i]) << type << " prompt " << p << " @" << i << ": llama.cpp's gap "
                                << gaps[i];
      ++argmax_checked;
    }
  }
  std::printf(
      "%-7s max |logit - llama.cpp|: last positions %.5f, all positions %.5f (tolerance %.2f); "
      "%d of %d positions within %.0e; argmax checked at %d positions\n",
      type.c_str(), worst_last, worst, kLogitTolerance, tight, positions, kTightTolerance,
      argmax_checked);
  RecordProperty("max_logit_error", std::to_string(worst));
  EXPECT_GE(tight, kMinTightFraction * positions)
      << type << ": too few positions agree to float rounding; a systematic difference?";
  EXPECT_GT(argmax_checked, 20) << "too few clear positions to compare argmax";
}

INSTANTIATE_TEST_SUITE_P(Presets, KquantGolden,
                         ::testing::Values("Q4_K_M", "Q5_K_M", "Q6_K", "Q5_0", "Q5_1", "Q8_0",
                                           "Q4_0"),
                         [](const auto& info) { return std::string(info.param); });

// The files are what the presets say: K-quant files carry K-quant matrices (Q4_K_M and Q5_K_M
// with a Q6_K attn_v next to Q4_K / Q5_K Q and K, so the Q/K/V stack is of mixed types), and the
// tolerance covers llama.cpp's own spread on them (2 threads vs 1, no repacking vs repacking).
TEST(KquantGoldenData, FilesAndToleranceCoverLlamaCppSpread) {
  const json golden = read_golden();
  ASSERT_EQ(golden["files"].size(), 7u);
  EXPECT_EQ(golden["files"]["Q4_K_M"]["tensor_types"]["blk.0.attn_q.weight"], "Q4_K");
  EXPECT_EQ(golden["files"]["Q4_K_M"]["tensor_types"]["blk.0.attn_v.weight"], "Q6_K");
  EXPECT_EQ(golden["files"]["Q5_K_M"]["tensor_types"]["blk.0.attn_q.weight"], "Q5_K");
  EXPECT_EQ(golden["files"]["Q5_K_M"]["tensor_types"]["blk.0.attn_v.weight"], "Q6_K");
  EXPECT_EQ(golden["files"]["Q6_K"]["tensor_types"]["blk.0.ffn_down.weight"], "Q6_K");
  double spread = 0;
  for (const auto& [type, file] : golden["files"].items()) {
    for (const auto& [name, s] : file["llamacpp_spread"].items()) {
      spread = std::max(spread, s["all_positions"].get<double>());
    }
  }
  std::printf("llama.cpp's own spread over all positions and files: %.3f\n", spread);
  EXPECT_GT(spread, 0.1);  // llama.cpp's two kernels really disagree
  EXPECT_LE(spread, kLogitTolerance);
}

}  // namespace
}  // namespace lightserve::model
