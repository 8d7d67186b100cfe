#include "model/constraint_vocabulary.h"

#include <algorithm>
#include <string>

namespace lightserve::model {

sampling::Vocabulary constraint_vocabulary(const Tokenizer& tokenizer, int32_t logits_width) {
  sampling::Vocabulary vocabulary;
  const int32_t n = tokenizer.vocab_size();
  vocabulary.logits_width = std::max(logits_width, n);
  vocabulary.token_bytes.reserve(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) {
    if (tokenizer.is_end_of_generation(id)) vocabulary.stop_ids.push_back(id);
    vocabulary.token_bytes.push_back(tokenizer.is_control(id) ? std::string()
                                                              : tokenizer.token_bytes(id));
  }
  return vocabulary;
}

}  // namespace lightserve::model
