// The shape of the KV arena: one pool of pages that full and lazy layers both draw from
// (docs/design.md §5). Pure arithmetic on counts and ids; no device.
//
// A *lane* is one layer's K and V rows of one request. A *page* holds `block_size` tokens of one
// lane (every layer of a LLaMA-family model has the same KV width, so pages are all one size).
// Each lane of a request has its own page table: a full lane holds ceil(T / block_size) pages
// for T tokens; a lazy lane keeps its sinks and the last `window` tokens as a ring of
// sink + window rows over at most ceil((sink + window) / block_size) pages, so it grows exactly
// like a full lane up to sink + window tokens and then stays constant, overwriting its oldest
// window rows (keys keep their original positions). A request below sink + window tokens costs
// exactly what full attention costs; above it, its lazy lanes stay constant.
//
// The layout is laid out for lazy fraction f: its hybrid footprint keeps full_layers =
// L - round(f·L) layers full and lazy_layers = round(f·L) lazy; the per-request overrides (full,
// streaming) are other splits of the same L layers over the same pool.
#pragma once

#include <cstdint>

#include "base/status.h"

namespace lightserve::memory {

// How many of a request's layers keep full (paged) KV and how many are lazy (sink + window).
struct Footprint {
  int32_t full_layers = 0;
  int32_t lazy_layers = 0;

  int32_t num_layers() const { return full_layers + lazy_layers; }
  friend bool operator==(const Footprint&, const Footprint&) = default;
};

struct KvLayout {
  int32_t num_layers = 0;
  int32_t block_size = 16;           // tokens per page, a power of two <= 256
  int32_t full_layers = 0;           // P: full layers of the hybrid footprint
  int32_t sink = 4;                  // S: first tokens a lazy layer keeps
  int32_t window = 1020;             // W: most recent tokens a lazy layer keeps (a ring)
  int32_t lazy_layers = 0;           // L - P: lazy layers of the hybrid footprint
  int64_t bytes_per_lane_token = 0;  // K + V bytes of one layer for one token

  // Lays the arena out for `lazy_fraction` of the layers being lazy. Errors name the setting.
  static Result<KvLayout> for_lazy_fraction(int32_t num_layers, double lazy_fraction,
                                            int32_t block_size, int32_t sink, int32_t window,
                                            int64_t bytes_per_lane_token);

  // Checks every field and that full_layers + lazy_layers == num_layers.
  Status validate() const;

  int32_t ring_tokens() const { return sink + window; }
  int64_t page_bytes() const { return int64_t{block_size} * bytes_per_lane_token; }

  // The footprint every request gets under the configured lazy fraction, and the two per-request
  // overrides (docs/design.md §4 baselines): `full` keeps every layer, `streaming` none.
  Footprint hybrid_footprint() const { return {full_layers, lazy_layers}; }
  Footprint full_footprint() const { return {num_layers, 0}; }
  Footprint streaming_footprint() const { return {0, num_layers}; }

  // Whether this arena can hold a request of this footprint: its layers add up to num_layers.
  // The error names the footprint.
  Status check_footprint(Footprint footprint) const;

  // Pages one lane holds for `tokens` tokens (tokens >= 0): a full lane ceil(T / block_size), a
  // lazy lane ceil(min(T, sink + window) / block_size).
  int64_t full_lane_pages(int64_t tokens) const;
  int64_t lazy_lane_pages(int64_t tokens) const;
  // Pages a request of `tokens` tokens holds. Precondition: check_footprint(footprint) is ok.
  int64_t pages_for(int64_t tokens, Footprint footprint) const;

  // KV bytes a request of `tokens` tokens occupies (whole pages).
  int64_t bytes_for(int64_t tokens, Footprint footprint) const;
  // The same tokens under plain full attention: every layer, paged at block_size.
  int64_t full_attention_bytes_for(int64_t tokens) const;

  // Row arithmetic. A row is one lane's K (or V) for one token; the arena is an array of rows,
  // page p holding rows [p·block_size, (p + 1)·block_size). A lazy lane keeps token t at ring
  // row t when t < sink, else sink + (t - sink) mod window (the sinks stay, the window is a
  // ring); ring row r lives in the lane's page r / block_size like a full lane's token r.
  int64_t page_row(int32_t page, int64_t row_in_page) const {
    return static_cast<int64_t>(page) * block_size + row_in_page;
  }
  int32_t ring_row(int64_t token) const {
    return static_cast<int32_t>(token < sink ? token : sink + (token - sink) % window);
  }
};

// ceil(numerator / denominator) for numerator >= 0, denominator > 0.
inline int64_t ceil_div(int64_t numerator, int64_t denominator) {
  return (numerator + denominator - 1) / denominator;
}

}  // namespace lightserve::memory
