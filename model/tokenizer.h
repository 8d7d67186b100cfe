// Tokenizers built from a model file's own vocabulary (GGUF `tokenizer.ggml.*`), matching
// llama.cpp's tokenization: byte-level BPE (`gpt2`: merges + the model's pre-tokenizer) and
// SentencePiece-style (`llama`: token scores, whitespace as U+2581, byte fallback).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "model/gguf.h"

namespace lightserve::model {

// Everything a tokenizer is built from, as read from a model file (GGUF keys in
// comments). Kept apart from the file format so other loaders (tokenizer.json) and tests can
// build one directly.
struct TokenizerSpec {
  std::string model = "gpt2";        // tokenizer.ggml.model
  std::string pre = "default";       // tokenizer.ggml.pre
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens (GPT-2 byte alphabet)
  std::vector<int32_t> token_types;  // tokenizer.ggml.token_type; empty: all normal
  std::vector<std::string> merges;   // tokenizer.ggml.merges, "left right", rank = index (gpt2)
  std::vector<float> scores;         // tokenizer.ggml.scores (llama); empty: all 0
  int32_t bos_id = -1;               // tokenizer.ggml.bos_token_id; −1 when none
  int32_t eos_id = -1;               // tokenizer.ggml.eos_token_id
  int32_t unk_id = -1;               // tokenizer.ggml.unknown_token_id
  int32_t pad_id = -1;               // tokenizer.ggml.padding_token_id
  bool add_bos = false;              // tokenizer.ggml.add_bos_token
  bool add_space_prefix = true;      // tokenizer.ggml.add_space_prefix (llama only)
  // general.name: llama.cpp strips the whitespace after most special tokens of Phi-3 models.
  std::string model_name;
};

class Tokenizer {
 public:
  // Validates `spec` (same errors as from_gguf) and builds the tokenizer.
  static Result<std::unique_ptr<Tokenizer>> from_spec(TokenizerSpec spec);
  // Errors name the problem: unsupported tokenizer.ggml.model or pre, missing or inconsistent
  // tokens / merges / token types, special ids out of range.
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const GgufFile& file);
  virtual ~Tokenizer() = default;

  // Text → ids. With parse_special, special (control / user-defined) token texts inside `text`
  // become their ids, as llama.cpp's `parse_special`; otherwise they are tokenized as text.
  // Adds BOS only when add_bos is true (callers pass add_bos_token() for model default).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos = false,
                                      bool parse_special = true) const = 0;
  // Ids → text (bytes; may be invalid UTF-8 mid-sequence). Control tokens render as their text
  // only when render_special.
  virtual std::string decode(std::span<const int32_t> ids, bool render_special = false) const = 0;
  // The bytes one token stands for.
  virtual std::string token_bytes(int32_t id, bool render_special = false) const = 0;
  // The token's vocabulary string as stored in the file (GPT-2 byte alphabet).
  virtual const std::string& token_text(int32_t id) const = 0;
  virtual std::optional<int32_t> find_token(std::string_view text) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // −1 when none
  virtual int32_t eos_id() const = 0;  // −1 when none
  virtual bool add_bos_token() const = 0;
  // End-of-generation tokens: eos plus tokens such as <|im_end|>, <|eot_id|>, <|endoftext|>.
  virtual bool is_end_of_generation(int32_t id) const = 0;
  virtual bool is_control(int32_t id) const = 0;
};

// Streaming detokenization: push tokens one at a time, get text that is safe to show (whole
// UTF-8 characters only; an incomplete sequence is held back until it completes).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool render_special = false);
  std::string push(int32_t id);
  std::string flush();  // whatever is held back, invalid bytes replaced by U+FFFD

 private:
  const Tokenizer& tokenizer_;
  bool render_special_;
  std::string pending_;
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// Chat formatting for models whose tokenizer.chat_template is ChatML
// (<|im_start|>role\ncontent<|im_end|>\n ...). Reproduces the template's output, including a
// default system prompt the template inserts when the first message is not a system message.
class ChatTemplate {
 public:
  // An Error when the file has no template or one that is not ChatML.
  static Result<ChatTemplate> from_gguf(const GgufFile& file);
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;
  const std::string& default_system_prompt() const { return default_system_; }

 private:
  std::string default_system_;  // empty when the template inserts none
};

}  // namespace lightserve::model
