// LightTransfer settings and layer selection (docs/design.md §4): which layers of a request keep
// full KV and which become lazy (sink + recent window), per mode, and the static plan file that
// `lightserve calibrate` writes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/backend.h"

namespace lightserve::model {

enum class LtMode {
  kOnline,     // per request: the P least lazy layers by lazy ratio stay full (default)
  kStatic,     // a fixed lazy set from a plan file (the paper's offline selection)
  kFull,       // every layer full: plain attention (f = 0 behaviour)
  kStreaming,  // every layer lazy: StreamingLLM without position shift
  kRandom,     // a seeded random lazy set of the same size as test's
};

std::string_view to_string(LtMode mode);
Result<LtMode> parse_lt_mode(std::string_view text);

// How online mode scores a layer's laziness (kernels::LazyScore): "mean" (the paper's, averaged
// over the last w_last queries and every head), "head-min" (the least lazy head over the last
// w_last queries), "head-min-last" (the least lazy head at the final query).
using kernels::LazyScore;
std::string_view to_string(LazyScore score);
Result<LazyScore> parse_lazy_score(std::string_view text);

// One configuration measured by `lightserve calibrate --quality` against full attention.
struct LtQualityPoint {
  std::string label;           // "full", "head-min f=0.50", ...
  std::string score;           // "" for full
  double lazy_fraction = 0.0;  // 0 for full
  std::vector<int32_t> passkey_lengths;
  std::vector<double> passkey_accuracy;  // [length] %, passkey_trials trials each
  double ppl = 0.0;                      // decode perplexity at ppl_length
  bool within_bound = false;             // passkey and perplexity both within the plan's bound
};

// A calibrated ranking of layers by laziness (lightserve calibrate): per-layer frequency of being
// lazy over a prompt set, and the order from laziest to least lazy.
struct LtPlan {
  std::string model;  // general.name of the calibrated model
  int32_t num_layers = 0;
  double lazy_fraction = 0.5;  // the fraction calibrated for
  int32_t num_prompts = 0;
  std::vector<double> lazy_frequency;  // [layer] in [0, 1]
  std::vector<double> mean_ratio;      // [layer] mean lazy ratio
  std::vector<int32_t> ranking;        // layers, laziest first

  // Quality gate (calibrate --quality; absent from older plans): the score and the largest lazy
  // fraction whose passkey accuracy stays within passkey_points of full attention at every length
  // and whose decode perplexity within ppl_percent %, and the measurements that decided it.
  // validated_fraction < 0: not measured; then `score` is the one the ranking was made with.
  LazyScore score = LazyScore::kMean;
  double validated_fraction = -1.0;
  double bound_passkey_points = 2.0;
  double bound_ppl_percent = 2.0;
  int32_t passkey_trials = 0;
  int32_t window = 0;  // the S, W the quality was measured with
  int32_t sink = 0;
  int32_t ppl_prefix = 0, ppl_length = 0;
  std::vector<LtQualityPoint> quality;

  // The `count` laziest layers (sorted by layer index).
  std::vector<int32_t> lazy_layers(int32_t count) const;
  // Rank used to break ties between equal lazy ratios: higher = lazier.
  std::vector<int32_t> tie_rank() const;

  static Result<LtPlan> load(const std::string& path);  // YAML; errors name the problem
  Status save(const std::string& path) const;
};

struct LightTransferSettings {
  LtMode mode = LtMode::kOnline;
  double lazy_fraction = 0.5;          // f: round(f·L) layers lazy
  int32_t sink = 4;                    // S
  int32_t window = 1020;               // W
  int32_t w_last = 16;                 // queries at the end of the prompt that score laziness
  LazyScore score = LazyScore::kMean;  // how online mode scores laziness
  uint64_t seed = 0;                   // kRandom
  std::optional<LtPlan> plan;          // kStatic (required) and tie-breaking in kTest

  // Errors name the setting: fraction ∉ [0, 1], sink < 0, window < 1, w_last < 1, static mode
  // without a plan or with a plan for another layer count.
  Status validate(int32_t num_layers) const;
  // P = L − round(f·L) (std::lround, the rounding memory::KvLayout uses).
  int32_t num_full_layers(int32_t num_layers) const;
};

// The test-time selection of docs/design.md §4 for one request: layers arrive in order with their
// lazy ratio; a max-heap keeps the P least lazy as full. When a layer arrives and the heap is full,
// the laziest of (heap + arrival) becomes lazy at once. Exactly the global top-P by
// (ratio, tie rank), computed online.
class LazySelector {
 public:
  // tie_rank[layer]: higher breaks ties towards lazy (empty: layer index).
  LazySelector(int32_t num_full_layers, std::vector<int32_t> tie_rank);

  struct Decision {
    bool arrival_full = false;  // the arriving layer keeps full KV
    int32_t demoted = -1;       // a layer that was full and becomes lazy now, or −1
  };
  Decision push(int32_t layer, float ratio);

  const std::vector<float>& ratios() const { return ratios_; }  // by arrival order of layers

 private:
  struct Entry {
    float ratio;
    int32_t tie;
    int32_t layer;
    bool operator<(const Entry& other) const;  // "less lazy than"
  };
  int32_t num_full_layers_;
  std::vector<int32_t> tie_rank_;
  std::vector<Entry> heap_;  // max-heap on laziness
  std::vector<float> ratios_;
};

}  // namespace lightserve::model
