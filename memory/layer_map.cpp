#include "memory/layer_map.h"

#include <algorithm>

#include "base/check.h"

namespace lightserve::memory {

namespace {

std::vector<int32_t> all_lanes_lowest_last_out(int32_t count) {
  std::vector<int32_t> lanes;
  lanes.reserve(static_cast<size_t>(count));
  for (int32_t lane = count - 1; lane >= 0; --lane) lanes.push_back(lane);  // lane 0 first
  return lanes;
}

}  // namespace

LayerMap::LayerMap(int32_t num_layers, int32_t max_full_layers, int32_t max_lazy_layers)
    : layer_kind_(static_cast<size_t>(num_layers), LayerKind::kUnassigned),
      layer_lane_(static_cast<size_t>(num_layers), -1),
      full_lane_layer_(static_cast<size_t>(max_full_layers), -1),
      lazy_lane_layer_(static_cast<size_t>(max_lazy_layers), -1),
      free_full_lanes_(all_lanes_lowest_last_out(max_full_layers)),
      free_lazy_lanes_(all_lanes_lowest_last_out(max_lazy_layers)) {
  LS_CHECK(num_layers >= 0 && max_full_layers >= 0 && max_lazy_layers >= 0 &&
           max_full_layers + max_lazy_layers >= num_layers)
      << num_layers << " layers, " << max_full_layers << " full and " << max_lazy_layers
      << " lazy lanes";
}

void LayerMap::check_layer(int32_t layer) const {
  LS_CHECK(layer >= 0 && layer < num_layers())
      << "layer " << layer << " not in [0, " << num_layers() << ")";
}

int32_t LayerMap::take_lane(std::vector<int32_t>& free_lanes, std::vector<int32_t>& lane_layer,
                            int32_t layer) {
  const int32_t lane = free_lanes.back();
  free_lanes.pop_back();
  lane_layer[static_cast<size_t>(lane)] = layer;
  return lane;
}

int32_t LayerMap::assign_full(int32_t layer) {
  LS_CHECK(kind_of(layer) == LayerKind::kUnassigned) << "layer " << layer << " assigned twice";
  LS_CHECK(!free_full_lanes_.empty())
      << "layer " << layer << ": all " << max_full_layers() << " full lanes are taken";
  const int32_t lane = take_lane(free_full_lanes_, full_lane_layer_, layer);
  layer_kind_[static_cast<size_t>(layer)] = LayerKind::kFull;
  layer_lane_[static_cast<size_t>(layer)] = lane;
  return lane;
}

int32_t LayerMap::assign_lazy(int32_t layer) {
  LS_CHECK(kind_of(layer) == LayerKind::kUnassigned) << "layer " << layer << " assigned twice";
  LS_CHECK(!free_lazy_lanes_.empty())
      << "layer " << layer << ": all " << max_lazy_layers() << " lazy lanes are taken";
  const int32_t lane = take_lane(free_lazy_lanes_, lazy_lane_layer_, layer);
  layer_kind_[static_cast<size_t>(layer)] = LayerKind::kLazy;
  layer_lane_[static_cast<size_t>(layer)] = lane;
  return lane;
}

int32_t LayerMap::make_lazy(int32_t layer) {
  LS_CHECK(kind_of(layer) == LayerKind::kFull) << "layer " << layer << " is not full";
  LS_CHECK(!free_lazy_lanes_.empty())
      << "layer " << layer << ": all " << max_lazy_layers() << " lazy lanes are taken";
  const int32_t full_lane = layer_lane_[static_cast<size_t>(layer)];
  full_lane_layer_[static_cast<size_t>(full_lane)] = -1;
  free_full_lanes_.push_back(full_lane);
  const int32_t lane = take_lane(free_lazy_lanes_, lazy_lane_layer_, layer);
  layer_kind_[static_cast<size_t>(layer)] = LayerKind::kLazy;
  layer_lane_[static_cast<size_t>(layer)] = lane;
  return lane;
}

LayerKind LayerMap::kind_of(int32_t layer) const {
  check_layer(layer);
  return layer_kind_[static_cast<size_t>(layer)];
}

int32_t LayerMap::lane_of(int32_t layer) const {
  LS_CHECK(kind_of(layer) != LayerKind::kUnassigned) << "layer " << layer << " has no lane yet";
  return layer_lane_[static_cast<size_t>(layer)];
}

int32_t LayerMap::layer_in_full_lane(int32_t lane) const {
  LS_CHECK(lane >= 0 && lane < max_full_layers()) << "full lane " << lane;
  return full_lane_layer_[static_cast<size_t>(lane)];
}

int32_t LayerMap::layer_in_lazy_lane(int32_t lane) const {
  LS_CHECK(lane >= 0 && lane < max_lazy_layers()) << "lazy lane " << lane;
  return lazy_lane_layer_[static_cast<size_t>(lane)];
}

int32_t LayerMap::num_unassigned_layers() const {
  return static_cast<int32_t>(
      std::count(layer_kind_.begin(), layer_kind_.end(), LayerKind::kUnassigned));
}

void LayerMap::check_invariants() const {
  // Every assigned layer's lane points back at it: no two layers share a lane.
  for (int32_t layer = 0; layer < num_layers(); ++layer) {
    const LayerKind kind = layer_kind_[static_cast<size_t>(layer)];
    const int32_t lane = layer_lane_[static_cast<size_t>(layer)];
    if (kind == LayerKind::kUnassigned) {
      LS_CHECK(lane == -1) << "unassigned layer " << layer << " holds lane " << lane;
      continue;
    }
    const std::vector<int32_t>& lane_layer =
        kind == LayerKind::kFull ? full_lane_layer_ : lazy_lane_layer_;
    LS_CHECK(lane >= 0 && lane < static_cast<int32_t>(lane_layer.size()))
        << "layer " << layer << " lane " << lane << " out of range";
    LS_CHECK(lane_layer[static_cast<size_t>(lane)] == layer)
        << "layer " << layer << " lane " << lane << " is held by layer "
        << lane_layer[static_cast<size_t>(lane)];
  }
  // Every owned lane's layer points back at the lane; free lanes are exactly the unowned ones.
  auto check_lanes = [&](const std::vector<int32_t>& lane_layer,
                         const std::vector<int32_t>& free_lanes, LayerKind kind) {
    std::vector<bool> listed_free(lane_layer.size(), false);
    for (int32_t lane : free_lanes) {
      LS_CHECK(lane >= 0 && lane < static_cast<int32_t>(lane_layer.size())) << "lane " << lane;
      LS_CHECK(!listed_free[static_cast<size_t>(lane)]) << "lane " << lane << " free twice";
      listed_free[static_cast<size_t>(lane)] = true;
    }
    for (size_t lane = 0; lane < lane_layer.size(); ++lane) {
      const int32_t layer = lane_layer[lane];
      LS_CHECK((layer == -1) == listed_free[lane]) << "lane " << lane << " free list disagrees";
      if (layer == -1) continue;
      LS_CHECK(layer >= 0 && layer < num_layers()) << "lane " << lane << " layer " << layer;
      LS_CHECK(layer_kind_[static_cast<size_t>(layer)] == kind &&
               layer_lane_[static_cast<size_t>(layer)] == static_cast<int32_t>(lane))
          << "lane " << lane << " claims layer " << layer << " which is elsewhere";
    }
  };
  check_lanes(full_lane_layer_, free_full_lanes_, LayerKind::kFull);
  check_lanes(lazy_lane_layer_, free_lazy_lanes_, LayerKind::kLazy);
}

}  // namespace lightserve::memory
