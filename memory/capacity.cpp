#include "memory/capacity.h"

#include <algorithm>
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

CapacityPlan::Sequences CapacityPlan::sequences_at(int64_t tokens) const {
  Sequences out;
  out.pages_hybrid = std::max<int64_t>(1, layout.pages_for(tokens, layout.hybrid_footprint()));
  out.pages_full = std::max<int64_t>(1, layout.pages_for(tokens, layout.full_footprint()));
  out.hybrid = num_pages / out.pages_hybrid;
  out.full = num_pages / out.pages_full;
  return out;
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
  const int64_t num_pages = budget_bytes / layout.page_bytes();
  constexpr int64_t kMaxIds = std::numeric_limits<int32_t>::max();
  if (num_pages > kMaxIds) {
    return Error{"KV budget " + format_bytes(budget_bytes) + " makes " + std::to_string(num_pages) +
                 " pages, more than int32 page ids allow: raise block_size"};
  }

  CapacityPlan plan;
  plan.layout = layout;
  plan.budget_bytes = budget_bytes;
  plan.context_tokens = context_tokens;
  plan.num_pages = static_cast<int32_t>(num_pages);
  plan.arena_bytes = num_pages * layout.page_bytes();
  plan.hybrid_bytes_per_sequence = layout.bytes_for(context_tokens, hybrid);
  plan.full_bytes_per_sequence = layout.full_attention_bytes_for(context_tokens);
  const CapacityPlan::Sequences at_context = plan.sequences_at(context_tokens);
  plan.max_hybrid_sequences = at_context.hybrid;
  plan.max_full_sequences = at_context.full;
  if (plan.max_hybrid_sequences == 0) {
    return Error{
        "KV budget " + format_bytes(budget_bytes) + " holds " +
        std::to_string(num_pages / layout.num_layers * layout.block_size) +
        " tokens of full-attention KV, less than one " + std::to_string(context_tokens) +
        "-token sequence; a hybrid sequence needs " + format_bytes(plan.hybrid_bytes_per_sequence) +
        " (" + std::to_string(at_context.pages_hybrid) + " pages of " +
        format_bytes(layout.page_bytes()) + "): raise the KV budget or lower the context length"};
  }
  return plan;
}

namespace {

std::string sequences_line(const CapacityPlan& plan, int64_t tokens) {
  const CapacityPlan::Sequences s = plan.sequences_at(tokens);
  char gain[48];
  std::snprintf(gain, sizeof(gain), "%.2fx",
                s.full == 0 ? 0.0 : static_cast<double>(s.hybrid) / static_cast<double>(s.full));
  return "  at " + std::to_string(tokens) + " tokens: " + std::to_string(s.hybrid) +
         " hybrid sequences (" + std::to_string(s.pages_hybrid) + " pages each) vs " +
         std::to_string(s.full) + " full-attention (" + std::to_string(s.pages_full) +
         " pages each): " + gain + " the sequences\n";
}

}  // namespace

std::string format_capacity(const CapacityPlan& plan) {
  const KvLayout& layout = plan.layout;
  std::string text = "KV arena: " + format_bytes(plan.arena_bytes) + " of a " +
                     format_bytes(plan.budget_bytes) + " budget, " +
                     std::to_string(layout.num_layers) + " layers (" +
                     std::to_string(layout.full_layers) + " full, " +
                     std::to_string(layout.lazy_layers) + " lazy per request)\n";
  text += "  pages: " + std::to_string(plan.num_pages) + " x " + std::to_string(layout.block_size) +
          " tokens x 1 layer (" + format_bytes(layout.page_bytes()) +
          " each), shared by full and lazy layers; a lazy layer holds at most " +
          std::to_string(layout.lazy_lane_pages(layout.ring_tokens())) + " (" +
          std::to_string(layout.sink) + " sink + " + std::to_string(layout.window) +
          " window tokens)\n";
  text += sequences_line(plan, plan.context_tokens);
  if (layout.ring_tokens() < plan.context_tokens) {
    text += sequences_line(plan, layout.ring_tokens());
  }
  return text;
}

}  // namespace lightserve::memory
