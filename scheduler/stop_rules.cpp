#include "scheduler/stop_rules.h"

#include <algorithm>
#include <utility>

#include "base/check.h"

namespace lightserve::scheduler {

StopRules::StopRules(std::span<const int32_t> eos_token_ids,
                     std::span<const int32_t> stop_token_ids, std::vector<std::string> stop_strings,
                     bool ignore_eos, int32_t max_tokens)
    : stop_strings_(std::move(stop_strings)), max_tokens_(max_tokens) {
  stop_ids_.assign(stop_token_ids.begin(), stop_token_ids.end());
  if (!ignore_eos) stop_ids_.insert(stop_ids_.end(), eos_token_ids.begin(), eos_token_ids.end());
  std::sort(stop_ids_.begin(), stop_ids_.end());
  for (const std::string& s : stop_strings_) LS_CHECK(!s.empty()) << "empty stop string";
}

bool StopRules::is_stop_token(int32_t token_id) const {
  return std::binary_search(stop_ids_.begin(), stop_ids_.end(), token_id);
}

StopRules::TextResult StopRules::push_text(std::string_view piece) {
  held_.append(piece);
  if (stop_strings_.empty()) return {std::exchange(held_, {}), false};
  // The earliest complete match wins; text before it is streamed, the rest dropped.
  size_t first = std::string::npos;
  for (const std::string& s : stop_strings_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    TextResult result{held_.substr(0, first), true};
    held_.clear();
    return result;
  }
  const size_t keep = longest_partial_match();
  TextResult result{held_.substr(0, held_.size() - keep), false};
  held_.erase(0, held_.size() - keep);
  return result;
}

std::string StopRules::flush() {
  return std::exchange(held_, {});
}

// The longest suffix of held_ that is a proper prefix of a stop string. O(|held| · Σ|stop|),
// with |held| < the longest stop string: small.
size_t StopRules::longest_partial_match() const {
  size_t best = 0;
  for (const std::string& s : stop_strings_) {
    const size_t max_len = std::min(held_.size(), s.size() - 1);
    for (size_t len = max_len; len > best; --len) {
      if (std::string_view(held_).substr(held_.size() - len) ==
          std::string_view(s).substr(0, len)) {
        best = len;
        break;
      }
    }
  }
  return best;
}

}  // namespace lightserve::scheduler
