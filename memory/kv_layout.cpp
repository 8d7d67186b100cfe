#include "memory/kv_layout.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "base/check.h"

namespace lightserve::memory {

namespace {

bool is_power_of_two(int64_t value) {
  return value > 0 && (value & (value - 1)) == 0;
}

std::string describe(Footprint footprint) {
  return std::to_string(footprint.full_layers) + " full + " +
         std::to_string(footprint.lazy_layers) + " lazy layers";
}

}  // namespace

Result<KvLayout> KvLayout::for_lazy_fraction(int32_t num_layers, double lazy_fraction,
                                             int32_t block_size, int32_t sink, int32_t window,
                                             int64_t bytes_per_lane_token) {
  if (!std::isfinite(lazy_fraction) || lazy_fraction < 0.0 || lazy_fraction > 1.0) {
    return Error{"lazy_fraction must be in [0, 1], got " + std::to_string(lazy_fraction)};
  }
  if (num_layers < 1) {
    return Error{"num_layers must be at least 1, got " + std::to_string(num_layers)};
  }
  const auto num_lazy = static_cast<int32_t>(std::lround(lazy_fraction * num_layers));
  KvLayout layout;
  layout.num_layers = num_layers;
  layout.block_size = block_size;
  layout.full_layers = num_layers - num_lazy;
  layout.sink = sink;
  layout.window = window;
  layout.lazy_layers = num_lazy;
  layout.bytes_per_lane_token = bytes_per_lane_token;
  if (Status status = layout.validate(); !status.ok()) return Error{status.message()};
  return layout;
}

Status KvLayout::validate() const {
  if (num_layers < 1) {
    return Error{"num_layers must be at least 1, got " + std::to_string(num_layers)};
  }
  if (!is_power_of_two(block_size) || block_size > 256) {
    return Error{"block_size must be a power of two in [1, 256], got " +
                 std::to_string(block_size)};
  }
  if (sink < 0) return Error{"sink must be >= 0, got " + std::to_string(sink)};
  if (window < 1) return Error{"window must be >= 1, got " + std::to_string(window)};
  if (bytes_per_lane_token < 1) {
    return Error{"bytes_per_lane_token must be >= 1, got " + std::to_string(bytes_per_lane_token)};
  }
  if (full_layers < 0 || lazy_layers < 0 || full_layers + lazy_layers != num_layers) {
    return Error{"full_layers (" + std::to_string(full_layers) + ") + lazy_layers (" +
                 std::to_string(lazy_layers) + ") must equal num_layers (" +
                 std::to_string(num_layers) + ")"};
  }
  return Status::Ok();
}

Status KvLayout::check_footprint(Footprint footprint) const {
  if (footprint.full_layers < 0 || footprint.lazy_layers < 0 ||
      footprint.num_layers() != num_layers) {
    return Error{"footprint of " + describe(footprint) + " does not cover the model's " +
                 std::to_string(num_layers) + " layers"};
  }
  return Status::Ok();
}

int64_t KvLayout::full_lane_pages(int64_t tokens) const {
  LS_CHECK(tokens >= 0) << tokens << " tokens";
  return ceil_div(tokens, block_size);
}

int64_t KvLayout::lazy_lane_pages(int64_t tokens) const {
  LS_CHECK(tokens >= 0) << tokens << " tokens";
  return ceil_div(std::min<int64_t>(tokens, ring_tokens()), block_size);
}

int64_t KvLayout::pages_for(int64_t tokens, Footprint footprint) const {
  LS_CHECK(check_footprint(footprint).ok()) << check_footprint(footprint).message();
  return footprint.full_layers * full_lane_pages(tokens) +
         footprint.lazy_layers * lazy_lane_pages(tokens);
}

int64_t KvLayout::bytes_for(int64_t tokens, Footprint footprint) const {
  return pages_for(tokens, footprint) * page_bytes();
}

int64_t KvLayout::full_attention_bytes_for(int64_t tokens) const {
  return pages_for(tokens, full_footprint()) * page_bytes();
}

}  // namespace lightserve::memory
