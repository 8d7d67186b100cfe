// Pre-tokenization for byte-level BPE: splits text into the "words" BPE merges within, using the
// ordered regex list llama.cpp applies for the file's `tokenizer.ggml.pre`. Each regex runs over
// every piece the previous one produced; text a regex does not match stays a piece of its own.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lightserve::model {

class PreTokenizer {
 public:
  // An Error naming `name` when no regex list is known for it.
  static Result<std::unique_ptr<PreTokenizer>> for_name(std::string_view name);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Whether llama.cpp adds BOS for this pre-tokenizer when the file does not say (Llama-3: yes).
  static bool default_add_bos(std::string_view name);

  // Appends the pieces of `text` (views into it, in order, covering it exactly) to `pieces`.
  // Invalid UTF-8 never matches a pattern and so ends up in pieces of its own. Thread-safe.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

  // llama-bpe (llama3) vocabularies take a whole piece as one token when it is in the
  // vocabulary, before any merge.
  bool ignore_merges() const { return ignore_merges_; }
  const std::string& name() const { return name_; }

 private:
  struct Regex;
  PreTokenizer() = default;

  std::string name_;
  bool ignore_merges_ = false;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

}  // namespace lightserve::model
