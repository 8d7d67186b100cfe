// A Hugging Face tokenizer.json (plus tokenizer_config.json and config.json) read into a
// TokenizerSpec, as llama.cpp's convert_hf_to_gguf.py would write it into GGUF:
// - byte-level BPE (model.type BPE with a ByteLevel pre-tokenizer: GPT-2, SmolLM2, Llama-3,
//   Qwen2): vocab, merges ("a b" or ["a", "b"]), added tokens (special → control, else
//   user-defined), and the pre-tokenizer named after the tokenizer.json rules (a regex-string
//   match, where llama.cpp hashes a test string's tokens);
// - SentencePiece-style BPE (byte_fallback: Llama-2, Mistral): token scores from the merge ranks
//   (a merged piece scores minus the rank of the first merge that makes it), <0xXX> byte tokens,
//   the space prefix from the Prepend / Metaspace rules.
// Anything else (WordPiece, Unigram, unknown pre-tokenizer rules) is an Error naming the file
// and what is not supported.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "model/tokenizer.h"

namespace lightserve::model {

struct HfTokenizer {
  TokenizerSpec spec;
  std::string chat_template;  // tokenizer_config.json's chat_template; empty when none
};

struct HfTokenizerSources {
  std::string folder;                 // for errors: "<folder>/tokenizer.json: ..."
  std::string_view tokenizer_json;    // required
  std::string_view tokenizer_config;  // tokenizer_config.json text; empty when absent
  std::string_view config;            // config.json text (bos/eos ids); empty when absent
  // config.json's vocab_size (the embedding rows): ids the tokenizer does not use become
  // unused "[PADn]" tokens, as llama.cpp's converter does; 0: the tokenizer's own size.
  int64_t vocab_size = 0;
};

Result<HfTokenizer> read_hf_tokenizer(const HfTokenizerSources& sources);

}  // namespace lightserve::model
