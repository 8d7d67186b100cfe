#include "memory/capacity.h"

#include <cstdio>
#include <limits>

namespace lightserve::memory {

double CapacityPlan::bytes_ratio() const {
  if (full_bytes_per_sequence == 0) return 0.0;
  return static_cast<double>(hybrid_bytes_per_sequence) /
         static_cast<double>(full_bytes_per_sequence);
}

double CapacityPlan::concurrency_gain() const {
  if (max_full_sequences == 0) return 0.0;
  return static_cast<double>(max_hybrid_sequences) / static_cast<double>(max_full_sequences);
}

std::string format_bytes(int64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes);
  int unit = -1;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), value < 10.0 ? "%.2f %s" : "%.1f %s", value, kUnits[unit]);
  return text;
}

Result<CapacityPlan> plan_capacity(const KvLayout& layout, int64_t budget_bytes,
                                   int64_t context_tokens) {
  if (Status status = layout.validate(); !status.ok()) return Error{status.message()};
  if (budget_bytes <= 0) {
    return Error{"KV budget must be positive, got " + std::to_string(budget_bytes) + " bytes"};
  }
  if (context_tokens <= 0) {
    return Error{"context length must be positive, got " + std::to_string(context_tokens)};
  }
  const Footprint hybrid = layout.hybrid_footprint();
  const int64_t blocks_per_sequence = layout.blocks_for(context_tokens, hybrid);
  const int64_t slots_per_sequence = layout.slots_for(hybrid);

  CapacityPlan plan;
  plan.layout = layout;
  plan.budget_bytes = budget_bytes;
  plan.context_tokens = context_tokens;
  plan.hybrid_bytes_per_sequence = layout.bytes_for(context_tokens, hybrid);
  plan.full_bytes_per_sequence = layout.full_attention_bytes_for(context_tokens);
  plan.max_hybrid_sequences = budget_bytes / plan.hybrid_bytes_per_sequence;
  plan.max_full_sequences = budget_bytes / plan.full_bytes_per_sequence;

  const int64_t full_block_bytes =
      int64_t{layout.block_size} * layout.num_layers * layout.bytes_per_lane_token;
  if (plan.max_hybrid_sequences == 0) {
    const int64_t full_tokens = budget_bytes / full_block_bytes * layout.block_size;
    return Error{"KV budget " + format_bytes(budget_bytes) + " holds " +
                 std::to_string(full_tokens) + " tokens of full-attention KV, less than one " +
                 std::to_string(context_tokens) + "-token sequence; a hybrid sequence needs " +
                 format_bytes(plan.hybrid_bytes_per_sequence) + " (" +
                 std::to_string(slots_per_sequence) + " slots + " +
                 std::to_string(blocks_per_sequence) +
                 " blocks): raise the KV budget or lower the context length"};
  }

  const int64_t num_slots = plan.max_hybrid_sequences * slots_per_sequence;
  const int64_t num_blocks =
      layout.block_bytes() == 0
          ? 0
          : (budget_bytes - num_slots * layout.slot_bytes()) / layout.block_bytes();
  constexpr int64_t kMaxIds = std::numeric_limits<int32_t>::max();
  if (num_blocks > kMaxIds || num_slots > kMaxIds) {
    return Error{"KV budget " + format_bytes(budget_bytes) + " makes " +
                 std::to_string(num_blocks) +
                 " blocks, more than int32 block ids allow: raise "
                 "block_size"};
  }
  plan.num_blocks = static_cast<int32_t>(num_blocks);
  plan.num_slots = static_cast<int32_t>(num_slots);
  plan.arena_bytes = num_blocks * layout.block_bytes() + num_slots * layout.slot_bytes();
  return plan;
}

std::string format_capacity(const CapacityPlan& plan) {
  const KvLayout& layout = plan.layout;
  std::string text = "KV arena: " + format_bytes(plan.arena_bytes) + " of a " +
                     format_bytes(plan.budget_bytes) + " budget, " +
                     std::to_string(layout.num_layers) + " layers (" +
                     std::to_string(layout.lanes_per_block) + " full, " +
                     std::to_string(layout.lanes_per_slot) + " lazy per request)\n";
  text += "  blocks: " + std::to_string(plan.num_blocks) + " x " +
          std::to_string(layout.block_size) + " tokens x " +
          std::to_string(layout.lanes_per_block) + " lanes (" + format_bytes(layout.block_bytes()) +
          " each)\n";
  if (layout.lanes_per_slot > 0) {
    text += "  slots: " + std::to_string(plan.num_slots) + " x (" + std::to_string(layout.sink) +
            " sink + " + std::to_string(layout.window) + " window) tokens x " +
            std::to_string(layout.lanes_per_slot) + " lanes (" + format_bytes(layout.slot_bytes()) +
            " each)\n";
  } else {
    text += "  slots: none (no lazy layers)\n";
  }
  char gain[64];
  std::snprintf(gain, sizeof(gain), "%.2fx the sequences, %.2fx the bytes each",
                plan.concurrency_gain(), plan.bytes_ratio());
  text += "  at " + std::to_string(plan.context_tokens) +
          " tokens: " + std::to_string(plan.max_hybrid_sequences) + " hybrid sequences (" +
          format_bytes(plan.hybrid_bytes_per_sequence) + " each) vs " +
          std::to_string(plan.max_full_sequences) + " full-attention (" +
          format_bytes(plan.full_bytes_per_sequence) + " each): " + gain + "\n";
  return text;
}

}  // namespace lightserve::memory
