// SentencePiece-style tokenization (tokenizer.ggml.model = "llama": Llama-2, Mistral, Phi-3), as
// llama.cpp runs it. A run of text gets a leading space when it starts the input or follows a
// special token (add_space_prefix), every space becomes U+2581 "▁", the run is split into UTF-8
// characters, and the adjacent pair whose concatenation is the highest-scoring vocabulary token is
// merged until none is. A symbol that is no token is re-split along the merges that built it, and
// what still is no token falls back to byte tokens <0xXX>.
#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/tokenizer_vocab.h"

namespace lightserve::model::detail {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";         // U+2581, SentencePiece's space
constexpr std::string_view kUnknownPiece = "\xE2\x96\x85";  // U+2585, llama.cpp's <unk> text

// Bytes of a UTF-8 sequence from its lead byte (continuation and invalid bytes count as 1).
size_t utf8_length(char lead) {
  static constexpr std::array<uint8_t, 16> kLength = {1, 1, 1, 1, 1, 1, 1, 1,
                                                      1, 1, 1, 1, 2, 2, 3, 4};
  return kLength[static_cast<uint8_t>(lead) >> 4];
}

// "<0x4A>" → 0x4A; −1 when `text` is not a byte token's text.
int byte_of_token_text(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (char c : text.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t at = 0;
  for (size_t found = text.find(from); found != std::string_view::npos;
       found = text.find(from, at)) {
    out.append(text.substr(at, found - at)).append(to);
    at = found + from.size();
  }
  out.append(text.substr(at));
  return out;
}

class SpmTokenizer final : public VocabTokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> build(TokenizerSpec spec);

  // As llama.cpp's detokenize: the space add_space_prefix put before the first word goes.
  std::string decode(std::span<const int32_t> ids, bool render_special) const override {
    std::string out = VocabTokenizer::decode(ids, render_special);
    if (add_space_prefix_ && !ids.empty() &&
        token_bytes(ids.front(), render_special).starts_with(' ')) {
      out.erase(0, 1);
    }
    return out;
  }

 private:
  struct Symbol {
    size_t begin;  // in the run's escaped text
    size_t size;   // 0 once merged into its left neighbour
    int32_t prev;
    int32_t next;
  };
  struct Bigram {
    float score;
    int32_t left;
    int32_t right;
    size_t size;  // bytes of the pair when it was queued (stale once either side changed)
    bool operator<(const Bigram& other) const {  // max-heap: highest score, then leftmost
      return score != other.score ? score < other.score : left > other.left;
    }
  };
  struct Session {
    std::string_view text;
    std::vector<Symbol> symbols;
    std::vector<Bigram> heap;
    std::unordered_map<std::string_view, std::pair<int32_t, int32_t>> built_from;
  };

  void encode_text(std::string_view text, bool after_special,
                   std::vector<int32_t>& out) const override;
  void try_pair(Session& session, int32_t left, int32_t right) const;
  void resegment(const Session& session, int32_t symbol, std::vector<int32_t>& out) const;

  std::vector<float> scores_;
  std::array<int32_t, 256> byte_token_{};  // <0xXX> (or the byte itself) per byte, or −1
  bool add_space_prefix_ = true;
};

Result<std::unique_ptr<Tokenizer>> SpmTokenizer::build(TokenizerSpec spec) {
  if (!spec.scores.empty() && spec.scores.size() != spec.tokens.size()) {
    return Error{"tokenizer.ggml.scores has " + std::to_string(spec.scores.size()) +
                 " entries but tokenizer.ggml.tokens has " + std::to_string(spec.tokens.size())};
  }
  std::unique_ptr<SpmTokenizer> tok(new SpmTokenizer());
  tok->scores_ = std::move(spec.scores);
  tok->add_space_prefix_ = spec.add_space_prefix;
  if (Status status = tok->init_vocabulary(spec); !status) return Error{status.message()};
  if (tok->scores_.empty()) tok->scores_.assign(tok->tokens_.size(), 0.0f);

  tok->byte_token_.fill(-1);
  for (int byte = 0; byte < 256; ++byte) {
    std::array<char, 8> hex{};
    std::snprintf(hex.data(), hex.size(), "<0x%02X>", byte);
    auto id = tok->id_of(hex.data());
    if (!id) id = tok->id_of(std::string(1, static_cast<char>(byte)));
    tok->byte_token_[byte] = id.value_or(-1);
  }
  for (size_t i = 0; i < tok->tokens_.size(); ++i) {
    const int32_t type = tok->types_[i];
    const std::string& text = tok->tokens_[i];
    if (type == kNormal || type == kUndefined) {
      tok->pieces_[i] = replace_all(text, kSpace, " ");
    } else if (type == kByte) {
      const int byte = byte_of_token_text(text);
      tok->pieces_[i] = byte >= 0 ? std::string(1, static_cast<char>(byte)) : text;
    } else if (type == kUserDefined) {
      tok->pieces_[i] = text;
    } else if (type == kUnknown) {
      tok->pieces_[i] = kUnknownPiece;
    }
  }
  tok->finish_specials();
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

void SpmTokenizer::try_pair(Session& session, int32_t left, int32_t right) const {
  if (left < 0 || right < 0) return;
  const Symbol& a = session.symbols[left];
  const Symbol& b = session.symbols[right];
  const std::string_view pair = session.text.substr(a.begin, a.size + b.size);
  const auto id = id_of(pair);
  if (!id) return;
  session.heap.push_back({scores_[static_cast<size_t>(*id)], left, right, pair.size()});
  std::push_heap(session.heap.begin(), session.heap.end());
  session.built_from[pair] = {left, right};
}

void SpmTokenizer::resegment(const Session& session, int32_t symbol,
                             std::vector<int32_t>& out) const {
  const Symbol& s = session.symbols[symbol];
  const std::string_view text = session.text.substr(s.begin, s.size);
  if (const auto id = id_of(text)) {
    out.push_back(*id);
    return;
  }
  if (const auto it = session.built_from.find(text); it != session.built_from.end()) {
    resegment(session, it->second.first, out);
    resegment(session, it->second.second, out);
    return;
  }
  for (char c : text) {  // byte fallback; a byte with no token at all is dropped
    if (const int32_t id = byte_token_[static_cast<uint8_t>(c)]; id >= 0) out.push_back(id);
  }
}

void SpmTokenizer::encode_text(std::string_view raw, bool after_special,
                               std::vector<int32_t>& out) const {
  std::string prefixed;
  if (add_space_prefix_ && after_special) prefixed.push_back(' ');
  prefixed.append(raw);
  const std::string text = replace_all(prefixed, " ", kSpace);

  Session session;
  session.text = text;
  for (size_t at = 0; at < text.size();) {
    const size_t size = std::min(utf8_length(text[at]), text.size() - at);
    const auto index = static_cast<int32_t>(session.symbols.size());
    session.symbols.push_back({at, size, index - 1, at + size == text.size() ? -1 : index + 1});
    at += size;
  }
  for (int32_t i = 1; i < static_cast<int32_t>(session.symbols.size()); ++i) {
    try_pair(session, i - 1, i);
  }
  while (!session.heap.empty()) {
    std::pop_heap(session.heap.begin(), session.heap.end());
    const Bigram bigram = session.heap.back();
    session.heap.pop_back();
    Symbol& left = session.symbols[bigram.left];
    Symbol& right = session.symbols[bigram.right];
    // Stale when either side has been merged since.
    if (left.size == 0 || right.size == 0 || left.size + right.size != bigram.size) continue;
    left.size += right.size;
    right.size = 0;
    left.next = right.next;
    if (right.next >= 0) session.symbols[right.next].prev = bigram.left;
    try_pair(session, left.prev, bigram.left);
    try_pair(session, bigram.left, left.next);
  }
  if (session.symbols.empty()) return;
  for (int32_t i = 0; i >= 0; i = session.symbols[i].next) resegment(session, i, out);
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> build_spm_tokenizer(TokenizerSpec spec) {
  return SpmTokenizer::build(std::move(spec));
}

}  // namespace lightserve::model::detail
