// Where the load generator's prompts come from (--dataset). Every session is a pure function of
// (seed, session id), so a run is reproducible and the same load can be sent to another server.
//
// Lengths are in tokens of the *server's* tokenizer, approximated: prompts are built from words
// (a list of common English words, or the words of a text file), and a word is taken to be
// `tokens_per_word` tokens (measured on the server's /tokenize before the run when it has one,
// else 1.0, which holds for common English words under byte-level BPE vocabularies). A chat
// template adds its own tokens on top. The report counts the server's own usage numbers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace lightserve::loadtest {

enum class DatasetKind { kRandom, kFile, kReasoning, kRag, kChat, kJsonl };

struct DatasetConfig {
  DatasetKind kind = DatasetKind::kRandom;
  std::string path;          // file / jsonl (also optional text for reasoning, rag, chat)
  int input_len = -1;        // -1: the kind's default
  int output_len = -1;       // -1: the kind's default
  double range_ratio = 0.0;  // lengths uniform in [len·(1−r), len·(1+r)]
  int turns = 3;             // chat: user turns per conversation
  uint64_t seed = 0;
  double tokens_per_word = 1.0;
};

Result<DatasetKind> parse_dataset_kind(const std::string& name);
const char* dataset_kind_name(DatasetKind kind);

// One session: a single request, or a chat conversation's user turns in order.
struct SessionPlan {
  std::vector<std::string> prompts;
  std::vector<int> output_lens;
  std::vector<int> approx_prompt_tokens;
};

class Dataset {
 public:
  static Result<Dataset> create(DatasetConfig config);

  SessionPlan session(int64_t id) const;
  bool is_chat() const { return config_.kind == DatasetKind::kChat; }
  int turns_per_session() const { return is_chat() ? config_.turns : 1; }
  int input_len() const { return config_.input_len; }
  int output_len() const { return config_.output_len; }
  const DatasetConfig& config() const { return config_; }

 private:
  struct JsonlEntry {
    std::string prompt;
    int output_len = 0;
  };
  std::string words_from(uint64_t& state, int num_tokens) const;

  DatasetConfig config_;
  std::vector<std::string> words_;  // the text's words (file), or the built-in list
  bool sequential_ = false;         // take consecutive words (real text) rather than random ones
  std::vector<JsonlEntry> entries_;
};

}  // namespace lightserve::loadtest
