// Carving a KV byte budget into pages, and the start-up capacity report
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

  int32_t num_pages = 0;
  int64_t arena_bytes = 0;  // num_pages · page_bytes <= budget_bytes

  // One sequence of context_tokens tokens, and how many fit at once.
  int64_t hybrid_bytes_per_sequence = 0;
  int64_t full_bytes_per_sequence = 0;  // plain full attention: every layer, paged at block_size
  int64_t max_hybrid_sequences = 0;     // in this plan's pages
  int64_t max_full_sequences = 0;       // in the same pages under full attention

  // hybrid_bytes_per_sequence / full_bytes_per_sequence (≈ 0.53 at 16K tokens and f = 0.5).
  double bytes_ratio() const;
  // max_hybrid_sequences / max_full_sequences; 0 when full attention fits none.
  double concurrency_gain() const;

  // How many sequences of `tokens` tokens (>= 1) fit in the pages at once: hybrid and full.
  struct Sequences {
    int64_t pages_hybrid = 0;  // pages one hybrid sequence holds
    int64_t pages_full = 0;    // pages one full-attention sequence holds
    int64_t hybrid = 0;
    int64_t full = 0;
  };
  Sequences sequences_at(int64_t tokens) const;
};

// Carves the budget into budget / page_bytes pages, which every layer kind and footprint draws
// from. Errors: an invalid layout, a non-positive budget or context, more pages than int32 ids,
// and a budget that cannot hold a single hybrid sequence of context_tokens (the message names
// both numbers).
Result<CapacityPlan> plan_capacity(const KvLayout& layout, int64_t budget_bytes,
                                   int64_t context_tokens);

// A few lines for the start-up log: bytes, pages, max sequences hybrid vs full at the context
// length and at a short length (sink + window tokens).
std::string format_capacity(const CapacityPlan& plan);

// "512 B", "10.0 MiB", "1.50 GiB": binary units, for logs and error messages.
std::string format_bytes(int64_t bytes);

}  // namespace lightserve::memory
