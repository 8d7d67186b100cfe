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
#include <utility>
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

// The chat formats lightserve renders (model/chat_template.cpp), each exactly as its family's
// template does: ChatML (SmolLM2, Qwen), Llama-3, Llama-3.1, Mistral v1 ([INST], Mistral-7B
// v0.1-v0.2) and Llama-2 chat (<<SYS>>).
enum class ChatFormat { kChatML, kLlama3, kLlama31, kMistralV1, kLlama2 };

// How a conversation is rendered: the OpenAI / vLLM request fields of the same names.
struct ChatOptions {
  bool add_generation_prompt = true;    // open the assistant's turn after the messages
  bool continue_final_message = false;  // leave the final (assistant) message open to continue it
  // chat_template_kwargs, values as text: only the variables the format's template reads
  // (llama3.1: date_string, its "Today Date"); any other name is refused, naming it.
  std::vector<std::pair<std::string, std::string>> kwargs;
};

// Chat formatting without a Jinja engine: the family is recognised from the template text (or
// named), then messages are rendered as that family's template renders them, including a default
// system prompt a ChatML template inserts when the first message is not a system message.
class ChatTemplate {
 public:
  // An Error when the file has no template or one of a family lightserve cannot render.
  static Result<ChatTemplate> from_gguf(const GgufFile& file, const Tokenizer& tokenizer);
  // A template text (Jinja, recognised by its markers) or a format name (chatml, llama3,
  // llama3.1, mistral-v1, llama2): --chat-template. BOS / EOS texts come from `tokenizer`.
  static Result<ChatTemplate> from_text(std::string_view text, const Tokenizer& tokenizer);
  // What --chat-template VALUE means: a format name as is, else the text of the file VALUE
  // names. An Error when it is neither, or the file holds no template lightserve can render.
  static Result<std::string> read_argument(const std::string& value);
  // The prompt text (special tokens as text; it carries its own BOS where the family has one).
  // An Error for a conversation the template refuses (the [INST] formats: roles that do not
  // alternate user/assistant after an optional system message).
  Result<std::string> render(std::span<const ChatMessage> messages,
                             bool add_generation_prompt) const {
    return render(messages, ChatOptions{add_generation_prompt, false, {}});
  }
  // With the options: an Error naming what the format cannot honour (both
  // add_generation_prompt and continue_final_message, a final message that is not the
  // assistant's, a kwarg the format does not read).
  Result<std::string> render(std::span<const ChatMessage> messages,
                             const ChatOptions& options) const;
  ChatFormat format() const { return format_; }
  std::string_view name() const;  // "chatml", "llama3", ...
  const std::string& default_system_prompt() const { return default_system_; }

 private:
  Result<std::string> render_turns(std::span<const ChatMessage> messages,
                                   bool add_generation_prompt, std::string_view date) const;

  ChatFormat format_ = ChatFormat::kChatML;
  std::string default_system_;  // ChatML: empty when the template inserts none
  std::string bos_;             // the tokenizer's BOS / EOS token texts
  std::string eos_;
};

}  // namespace lightserve::model
