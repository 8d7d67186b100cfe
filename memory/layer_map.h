// LayerMap: which lane holds each layer's KV for one request (docs/design.md §4, §5).
//
// Built incrementally during prefill, layer by layer, the way test-time selection decides:
// a finished layer takes a free full lane (assign_full) or goes straight to a lazy lane
// (assign_lazy); when the full lanes are all taken and a new layer is less lazy than the laziest
// full one, that one is demoted (make_lazy), freeing its full lane for the new layer. So at most
// max_full_layers full lanes are ever in use, and a freed lane is the next one handed out.
//
// Lanes are request-wide indices: full lane l is row l of the request's full-lane page table,
// lazy lane l row l of its lazy-lane page table (RequestKv). The map holds only ids; moving the
// K/V rows (cutting a demoted layer to sinks + window) is the model's job.
//
// Preconditions are LS_CHECKed (misuse, not shortage: callers query num_free_*_lanes first).
// Not thread-safe: owned by the engine thread.
#pragma once

#include <cstdint>
#include <vector>

namespace lightserve::memory {

enum class LayerKind : uint8_t { kUnassigned, kFull, kLazy };

class LayerMap {
 public:
  LayerMap() = default;
  // max_full_layers / max_lazy_layers: the request's footprint (full and lazy lanes it owns).
  LayerMap(int32_t num_layers, int32_t max_full_layers, int32_t max_lazy_layers);

  // Precondition: layer unassigned and a lane of that kind free. Returns the lane.
  int32_t assign_full(int32_t layer);
  int32_t assign_lazy(int32_t layer);
  // Precondition: layer full and a lazy lane free. Frees the full lane; returns the lazy lane.
  int32_t make_lazy(int32_t layer);

  LayerKind kind_of(int32_t layer) const;
  bool is_full(int32_t layer) const { return kind_of(layer) == LayerKind::kFull; }
  bool is_lazy(int32_t layer) const { return kind_of(layer) == LayerKind::kLazy; }
  // Precondition: layer assigned. A full lane for full layers, a lazy lane for lazy ones.
  int32_t lane_of(int32_t layer) const;
  // The layer in a full (lazy) lane, or -1 when the lane is free.
  int32_t layer_in_full_lane(int32_t lane) const;
  int32_t layer_in_lazy_lane(int32_t lane) const;

  int32_t num_layers() const { return static_cast<int32_t>(layer_kind_.size()); }
  int32_t max_full_layers() const { return static_cast<int32_t>(full_lane_layer_.size()); }
  int32_t max_lazy_layers() const { return static_cast<int32_t>(lazy_lane_layer_.size()); }
  int32_t num_full_layers() const { return max_full_layers() - num_free_full_lanes(); }
  int32_t num_lazy_layers() const { return max_lazy_layers() - num_free_lazy_lanes(); }
  int32_t num_unassigned_layers() const;
  int32_t num_free_full_lanes() const { return static_cast<int32_t>(free_full_lanes_.size()); }
  int32_t num_free_lazy_lanes() const { return static_cast<int32_t>(free_lazy_lanes_.size()); }
  bool complete() const { return num_unassigned_layers() == 0; }

  // Layer -> lane and lane -> layer agree both ways; no two layers share a lane; free lanes are
  // exactly the unowned ones; counts within the footprint.
  void check_invariants() const;

 private:
  static int32_t take_lane(std::vector<int32_t>& free_lanes, std::vector<int32_t>& lane_layer,
                           int32_t layer);
  void check_layer(int32_t layer) const;

  std::vector<LayerKind> layer_kind_;
  std::vector<int32_t> layer_lane_;       // lane of each assigned layer, -1 otherwise
  std::vector<int32_t> full_lane_layer_;  // layer in each full lane, -1 when free
  std::vector<int32_t> lazy_lane_layer_;  // layer in each lazy lane, -1 when free
  std::vector<int32_t> free_full_lanes_;  // LIFO: back() is handed out next
  std::vector<int32_t> free_lazy_lanes_;
};

}  // namespace lightserve::memory
