#include "loadtest/dataset.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

namespace lightserve::loadtest {

namespace {

// Common English words; each is one token (with its leading space) in byte-level BPE
// vocabularies such as GPT-2's, Llama-3's and SmolLM2's.
constexpr const char* kWords[] = {
    "the",       "of",      "and",    "to",     "in",        "is",     "you",     "that",
    "it",        "he",      "was",    "for",    "on",        "are",    "as",      "with",
    "his",       "they",    "at",     "be",     "this",      "have",   "from",    "or",
    "one",       "had",     "by",     "word",   "but",       "not",    "what",    "all",
    "were",      "we",      "when",   "your",   "can",       "said",   "there",   "use",
    "an",        "each",    "which",  "she",    "do",        "how",    "their",   "if",
    "will",      "up",      "other",  "about",  "out",       "many",   "then",    "them",
    "these",     "so",      "some",   "her",    "would",     "make",   "like",    "him",
    "into",      "time",    "has",    "look",   "two",       "more",   "write",   "go",
    "see",       "number",  "no",     "way",    "could",     "people", "my",      "than",
    "first",     "water",   "been",   "call",   "who",       "oil",    "its",     "now",
    "find",      "long",    "down",   "day",    "did",       "get",    "come",    "made",
    "may",       "part",    "over",   "new",    "sound",     "take",   "only",    "little",
    "work",      "know",    "place",  "year",   "live",      "me",     "back",    "give",
    "most",      "very",    "after",  "thing",  "our",       "just",   "name",    "good",
    "man",       "think",   "say",    "great",  "where",     "help",   "through", "much",
    "before",    "line",    "right",  "too",    "mean",      "old",    "any",     "same",
    "tell",      "boy",     "follow", "came",   "want",      "show",   "also",    "around",
    "form",      "three",   "small",  "set",    "put",       "end",    "does",    "another",
    "well",      "large",   "must",   "big",    "even",      "such",   "because", "turn",
    "here",      "why",     "ask",    "went",   "men",       "read",   "need",    "land",
    "different", "home",    "us",     "move",   "try",       "kind",   "hand",    "picture",
    "again",     "change",  "off",    "play",   "spell",     "air",    "away",    "animal",
    "house",     "point",   "page",   "letter", "mother",    "answer", "found",   "study",
    "still",     "learn",   "should", "world",  "high",      "every",  "near",    "add",
    "food",      "between", "own",    "below",  "country",   "plant",  "last",    "school",
    "father",    "keep",    "tree",   "never",  "start",     "city",   "earth",   "eye",
    "light",     "thought", "head",   "under",  "story",     "saw",    "left",    "few",
    "while",     "along",   "might",  "close",  "something", "seem",   "next",    "hard",
    "open",      "example",
};

struct Defaults {
  int input_len;
  int output_len;
};

Defaults defaults_of(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kReasoning:
      return {512, 7500};
    case DatasetKind::kRag:
      return {7936, 256};
    case DatasetKind::kChat:
      return {128, 64};
    default:
      return {1024, 128};
  }
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A length uniform in [len·(1−r), len·(1+r)], at least 1.
int draw_length(uint64_t& state, int len, double range_ratio) {
  const int lo = std::max(1, static_cast<int>(std::floor(len * (1.0 - range_ratio))));
  const int hi = std::max(lo, static_cast<int>(std::ceil(len * (1.0 + range_ratio))));
  return lo + static_cast<int>(splitmix64(state) % static_cast<uint64_t>(hi - lo + 1));
}

}  // namespace

Result<DatasetKind> parse_dataset_kind(const std::string& name) {
  for (DatasetKind k : {DatasetKind::kRandom, DatasetKind::kFile, DatasetKind::kReasoning,
                        DatasetKind::kRag, DatasetKind::kChat, DatasetKind::kJsonl}) {
    if (name == dataset_kind_name(k)) return k;
  }
  return Error{"unknown --dataset '" + name + "' (random, file, reasoning, rag, chat, jsonl)"};
}

const char* dataset_kind_name(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kRandom:
      return "random";
    case DatasetKind::kFile:
      return "file";
    case DatasetKind::kReasoning:
      return "reasoning";
    case DatasetKind::kRag:
      return "rag";
    case DatasetKind::kChat:
      return "chat";
    case DatasetKind::kJsonl:
      return "jsonl";
  }
  return "?";
}

Result<Dataset> Dataset::create(DatasetConfig config) {
  const Defaults d = defaults_of(config.kind);
  if (config.input_len < 0) config.input_len = d.input_len;
  if (config.output_len < 0) config.output_len = d.output_len;
  if (config.input_len < 1 || config.output_len < 1) {
    return Error{"--input-len and --output-len must be at least 1"};
  }
  if (config.range_ratio < 0 || config.range_ratio >= 1) {
    return Error{"--range-ratio must be in [0, 1)"};
  }
  if (config.turns < 1) return Error{"--turns must be at least 1"};
  if (!(config.tokens_per_word > 0)) return Error{"tokens per word must be positive"};
  Dataset ds;
  ds.config_ = config;
  const bool needs_path = config.kind == DatasetKind::kFile || config.kind == DatasetKind::kJsonl;
  if (needs_path && config.path.empty()) {
    std::string message = "--dataset ";
    message.append(dataset_kind_name(config.kind));
    message.append(" needs --dataset-path");
    return Error{message};
  }
  if (!config.path.empty()) {
    std::ifstream in(config.path);
    if (!in) return Error{"cannot read --dataset-path " + config.path};
    if (config.kind == DatasetKind::kJsonl) {
      std::string line;
      int line_number = 0;
      while (std::getline(in, line)) {
        ++line_number;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object() || !j.contains("prompt") ||
            !j["prompt"].is_string()) {
          return Error{config.path + ":" + std::to_string(line_number) +
                       ": expected {\"prompt\": \"...\", \"output_len\": N}"};
        }
        JsonlEntry e{j["prompt"].get<std::string>(), config.output_len};
        if (j.contains("output_len") && j["output_len"].is_number_integer()) {
          e.output_len = std::max(1, j["output_len"].get<int>());
        }
        ds.entries_.push_back(std::move(e));
      }
      if (ds.entries_.empty()) return Error{config.path + " holds no prompt"};
    } else {
      std::string word;
      while (in >> word) ds.words_.push_back(word);
      if (ds.words_.empty()) return Error{config.path + " holds no words"};
      ds.sequential_ = true;
    }
  }
  if (ds.words_.empty()) ds.words_.assign(std::begin(kWords), std::end(kWords));
  return ds;
}

std::string Dataset::words_from(uint64_t& state, int num_tokens) const {
  const int num_words =
      std::max(1, static_cast<int>(std::lround(num_tokens / config_.tokens_per_word)));
  std::string text;
  size_t pos = splitmix64(state) % words_.size();
  for (int i = 0; i < num_words; ++i) {
    if (i > 0) text.push_back(' ');
    if (sequential_) {
      text.append(words_[pos]);
      pos = (pos + 1) % words_.size();
    } else {
      text.append(words_[splitmix64(state) % words_.size()]);
    }
  }
  return text;
}

SessionPlan Dataset::session(int64_t id) const {
  uint64_t state = config_.seed * 0x100000001b3ULL + static_cast<uint64_t>(id) + 1;
  splitmix64(state);
  SessionPlan plan;
  if (config_.kind == DatasetKind::kJsonl) {
    const JsonlEntry& e = entries_[static_cast<size_t>(id) % entries_.size()];
    plan.prompts.push_back(e.prompt);
    plan.output_lens.push_back(e.output_len);
    plan.approx_prompt_tokens.push_back(0);
    return plan;
  }
  for (int turn = 0; turn < turns_per_session(); ++turn) {
    const int input = draw_length(state, config_.input_len, config_.range_ratio);
    const int output = draw_length(state, config_.output_len, config_.range_ratio);
    plan.prompts.push_back(words_from(state, input));
    plan.output_lens.push_back(output);
    plan.approx_prompt_tokens.push_back(input);
  }
  return plan;
}

}  // namespace lightserve::loadtest
