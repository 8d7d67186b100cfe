// LightTransfer settings and layer selection (docs/design.md §4): which layers of a request keep
// full KV and which become lazy (sink + recent window), per mode, and the static plan file that
// `lightserve calibrate` writes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

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

  // The `count` laziest layers (sorted by layer index).
  std::vector<int32_t> lazy_layers(int32_t count) const;
  // Rank used to break ties between equal lazy ratios: higher = lazier.
  std::vector<int32_t> tie_rank() const;

  static Result<LtPlan> load(const std::string& path);  // YAML; errors name the problem
  Status save(const std::string& path) const;
};

struct LightTransferSettings {
  LtMode mode = LtMode::kOnline;
  double lazy_fraction = 0.5;  // f: round(f·L) layers lazy
  int32_t sink = 4;            // S
  int32_t window = 1020;       // W
  int32_t w_last = 16;         // queries at the end of the prompt that score laziness
  uint64_t seed = 0;           // kRandom
  std::optional<LtPlan> plan;  // kStatic (required) and tie-breaking in kTest

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
