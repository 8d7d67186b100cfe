// What every tokenizer over a GGUF vocabulary shares, whatever its algorithm: the token table and
// its types, special-token splitting, end-of-generation tokens, BOS handling and per-token bytes.
// BpeTokenizer (tokenizer.cpp) and SpmTokenizer (spm_tokenizer.cpp) derive from it and supply
// only the encoding of a run of plain text and the bytes each token decodes to. Internal to model/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "model/tokenizer.h"

namespace lightserve::model::detail {

// llama.cpp token types (tokenizer.ggml.token_type).
enum TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

std::string utf8_encode(uint32_t code_point);

class VocabTokenizer : public Tokenizer {
 public:
  // Splits out special tokens, encodes the text between them with encode_text(), adds BOS.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const final;
  std::string decode(std::span<const int32_t> ids, bool render_special) const override;
  std::string token_bytes(int32_t id, bool render_special) const final;
  const std::string& token_text(int32_t id) const final;
  std::optional<int32_t> find_token(std::string_view text) const final;

  int32_t vocab_size() const final { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const final { return bos_id_; }
  int32_t eos_id() const final { return eos_id_; }
  bool add_bos_token() const final { return add_bos_; }
  bool is_end_of_generation(int32_t id) const final {
    return valid(id) && end_of_generation_[static_cast<size_t>(id)];
  }
  bool is_control(int32_t id) const final {
    return valid(id) && types_[static_cast<size_t>(id)] == kControl;
  }

 protected:
  // Validates the vocabulary part of `spec` (tokens, types, special ids) and takes it over;
  // pieces_ is sized but left for the derived class to fill, after which call finish_specials().
  Status init_vocabulary(TokenizerSpec& spec);
  // Collects the special tokens matched in text (control, user-defined, unknown), longest first,
  // and which of them swallow the whitespace after them.
  void finish_specials();
  // Appends the ids of `text`, a run with no special token in it. `after_special` is true when
  // the run starts the input or follows a special token (SentencePiece adds its space there).
  virtual void encode_text(std::string_view text, bool after_special,
                           std::vector<int32_t>& out) const = 0;

  bool valid(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < tokens_.size(); }
  std::optional<int32_t> id_of(std::string_view text) const {
    const auto it = token_ids_.find(text);
    if (it == token_ids_.end()) return std::nullopt;
    return it->second;
  }

  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;
  std::vector<std::string> pieces_;  // bytes each token decodes to (render_special = false)

 private:
  // A piece of the input: either raw text [begin, end) or one special token.
  struct Fragment {
    int32_t token;  // −1 for raw text
    size_t begin;
    size_t end;
  };
  std::vector<Fragment> split_special(std::string_view text, bool parse_special) const;
  void mark_strip_after(std::string_view model_name);

  std::string model_name_;  // general.name
  std::vector<bool> end_of_generation_;
  std::vector<bool> strip_after_;  // whitespace after this special token is dropped (Phi-3)
  std::unordered_map<std::string_view, int32_t> token_ids_;  // views into tokens_
  std::vector<int32_t> specials_;                            // matched in text, longest first
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  bool add_bos_ = false;
};

// Builds the SentencePiece-style tokenizer (tokenizer.ggml.model = "llama"): spm_tokenizer.cpp.
Result<std::unique_ptr<Tokenizer>> build_spm_tokenizer(TokenizerSpec spec);

}  // namespace lightserve::model::detail
