// Stop rules of one request (docs/design.md §6 step 4): end-of-generation and stop token ids (EOS
// ignored under ignore_eos; explicit stop_token_ids always apply), max_tokens, and stop strings
// with streaming hold-back.
//
// Hold-back: text is streamed only once it can no longer be part of a stop string. After each
// piece, the longest suffix of the not-yet-streamed text that is a proper prefix of some stop
// string stays held; everything before it is released. A stop string split across any number of
// tokens is therefore caught, and neither it nor anything after it is ever streamed (the text up
// to the match is). At a finish for another reason the held text is released by flush().
//
// Not thread-safe: one per request, used on the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lightserve::scheduler {

class StopRules {
 public:
  StopRules() = default;
  // eos_token_ids: the model's end-of-generation ids (skipped when ignore_eos).
  // Precondition: no stop string is empty (Engine::add refuses those).
  StopRules(std::span<const int32_t> eos_token_ids, std::span<const int32_t> stop_token_ids,
            std::vector<std::string> stop_strings, bool ignore_eos, int32_t max_tokens);

  // The id ends the request as a stop token (it is not streamed).
  bool is_stop_token(int32_t token_id) const;
  // `num_generated` tokens (including this step's) reach max_tokens.
  bool reached_length(int32_t num_generated) const { return num_generated >= max_tokens_; }

  struct TextResult {
    std::string text;      // safe to stream now
    bool stopped = false;  // a stop string completed: finish with kStop; nothing more to stream
  };
  // Feeds the next piece of detokenized text.
  [[nodiscard]] TextResult push_text(std::string_view piece);
  // Releases the held-back text (at a finish that is not a stop string).
  [[nodiscard]] std::string flush();

  const std::string& held_text() const { return held_; }
  // The ids that end the request (EOS unless ignored, stop_token_ids), sorted.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

 private:
  size_t longest_partial_match() const;

  std::vector<int32_t> stop_ids_;  // sorted
  std::vector<std::string> stop_strings_;
  int32_t max_tokens_ = 0;
  std::string held_;  // text not streamed yet: a possible start of a stop string
};

}  // namespace lightserve::scheduler
