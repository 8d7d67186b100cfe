// Carving a KV byte budget into blocks and slots, and the start-up capacity report
// (docs/design.md §5: "Startup prints the capacity").
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "memory/kv_layout.h"

namespace lightserve::memory {

struct CapacityPlan {
  KvLayout layout;
  int64_t budget_bytes = 0;
  int64_t context_tokens = 0;  // the configured context length the plan is sized for

  int32_t num_blocks = 0;
  int32_t num_slots = 0;
  int64_t arena_bytes = 0;  // num_blocks · block_bytes + num_slots · slot_bytes <= budget_bytes

  // One sequence of context_tokens tokens, and how many fit at once.
  int64_t hybrid_bytes_per_sequence = 0;
  int64_t full_bytes_per_sequence = 0;  // plain full attention: every layer, paged at block_size
  int64_t max_hybrid_sequences = 0;     // in this plan's blocks and slots
  int64_t max_full_sequences = 0;       // in the same budget_bytes under full attention

  // hybrid_bytes_per_sequence / full_bytes_per_sequence (≈ 0.53 at 16K tokens and f = 0.5).
  double bytes_ratio() const;
  // max_hybrid_sequences / max_full_sequences; 0 when full attention fits none.
  double concurrency_gain() const;
};

// Chooses num_slots and num_blocks so that the most hybrid requests of `context_tokens` fit: each
// needs slots_for(hybrid) slots and blocks_for(context_tokens, hybrid) blocks; every byte left
// after the slots goes to blocks (they also serve `full` overrides and shorter requests).
// Errors: an invalid layout, a non-positive budget or context, more blocks than int32 ids, and a
// budget that cannot hold a single sequence of context_tokens (the message names both numbers).
Result<CapacityPlan> plan_capacity(const KvLayout& layout, int64_t budget_bytes,
                                   int64_t context_tokens);

// A few lines for the start-up log: bytes, blocks, slots, max sequences hybrid vs full.
std::string format_capacity(const CapacityPlan& plan);

// "512 B", "10.0 MiB", "1.50 GiB": binary units, for logs and error messages.
std::string format_bytes(int64_t bytes);

}  // namespace lightserve::memory
