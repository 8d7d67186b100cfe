// The shape of the KV arena: how layer lanes and tokens are packed into blocks and slots
// (docs/design.md §5). Pure arithmetic on counts and ids; no device.
//
// A *lane* is one layer's K and V rows. A *block* holds `block_size` tokens for
// `lanes_per_block` lanes (the full layers of a request); a *slot* holds `sink + window` tokens
// for `lanes_per_slot` lanes (the lazy layers: fixed sinks plus a ring of the last `window`
// tokens). With the arena laid out for lazy fraction f, lanes_per_block = P = L - round(f·L) and
// lanes_per_slot = L - P, so a hybrid request (P full, L - P lazy layers) needs exactly
// 1 slot + ceil(T / block_size) blocks whichever layers turned out lazy.
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

// Where a request-wide lane index lands: the lane group (full lanes) or the request's n-th slot
// (lazy lanes), and the lane inside that block or slot.
struct LanePlace {
  int32_t container = 0;  // lane group index (full) or index into the request's slots (lazy)
  int32_t lane = 0;       // lane inside the block or slot
};

struct KvLayout {
  int32_t num_layers = 0;
  int32_t block_size = 16;           // tokens per block, a power of two <= 256
  int32_t lanes_per_block = 0;       // P: full-layer lanes per block; 0 when every layer is lazy
  int32_t sink = 4;                  // S: first tokens a lazy layer keeps
  int32_t window = 1020;             // W: most recent tokens a lazy layer keeps (a ring)
  int32_t lanes_per_slot = 0;        // L - P: lazy-layer lanes per slot; 0 when no layer is lazy
  int64_t bytes_per_lane_token = 0;  // K + V bytes of one layer for one token

  // Lays the arena out for `lazy_fraction` of the layers being lazy. Errors name the setting.
  static Result<KvLayout> for_lazy_fraction(int32_t num_layers, double lazy_fraction,
                                            int32_t block_size, int32_t sink, int32_t window,
                                            int64_t bytes_per_lane_token);

  // Checks every field and that lanes_per_block + lanes_per_slot == num_layers.
  Status validate() const;

  int32_t slot_tokens() const { return sink + window; }
  int64_t block_bytes() const;  // 0 when lanes_per_block == 0
  int64_t slot_bytes() const;   // 0 when lanes_per_slot == 0

  // The footprint every request gets under the configured lazy fraction, and the two per-request
  // overrides (docs/design.md §4 baselines): `full` keeps every layer, `streaming` none.
  Footprint hybrid_footprint() const { return {lanes_per_block, lanes_per_slot}; }
  Footprint full_footprint() const { return {num_layers, 0}; }
  Footprint streaming_footprint() const { return {0, num_layers}; }

  // Whether this arena can hold a request of this footprint: layers add up to num_layers, and
  // full (lazy) layers only when blocks (slots) exist. The error names the footprint.
  Status check_footprint(Footprint footprint) const;

  // Precondition for the three below: check_footprint(footprint) is ok (LS_CHECK otherwise).
  // Lane groups = blocks per block_size tokens: ceil(full_layers / lanes_per_block).
  int32_t num_lane_groups(Footprint footprint) const;
  int64_t blocks_for(int64_t tokens, Footprint footprint) const;
  int32_t slots_for(Footprint footprint) const;

  // KV bytes a request of `tokens` tokens occupies (whole blocks and slots).
  int64_t bytes_for(int64_t tokens, Footprint footprint) const;
  // The same tokens under plain full attention: every layer, paged at block_size.
  int64_t full_attention_bytes_for(int64_t tokens) const;

  // Request-wide lane index -> physical place. Preconditions: lane >= 0; P (or L - P) > 0.
  LanePlace place_full_lane(int32_t lane) const;
  LanePlace place_lazy_lane(int32_t lane) const;

  // Row arithmetic. A row is one lane's K (or V) for one token; the block arena and the slot
  // arena are arrays of rows. Block b's lane l starts at row (b·P + l)·block_size; slot s's lane
  // l at (s·(L - P) + l)·(sink + window). A lazy layer keeps token t at ring row t when
  // t < sink, else sink + (t - sink) mod window (the sinks stay, the window is a ring).
  int64_t rows_per_block() const { return static_cast<int64_t>(lanes_per_block) * block_size; }
  int64_t block_row(int32_t block, int32_t lane, int64_t row_in_block) const {
    return (static_cast<int64_t>(block) * lanes_per_block + lane) * block_size + row_in_block;
  }
  int64_t slot_row(int32_t slot, int32_t lane, int64_t ring_row) const {
    return (static_cast<int64_t>(slot) * lanes_per_slot + lane) * slot_tokens() + ring_row;
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
