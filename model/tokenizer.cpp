// Byte-level BPE (GPT-2 style) as llama.cpp runs it: special tokens are split out first (longest
// first), the rest is pre-tokenized by the file's regex list, each piece's bytes become GPT-2
// alphabet symbols, and the lowest-ranked adjacent pair is merged until none applies. Also the
// vocabulary part every tokenizer shares (tokenizer_vocab.h) and the GGUF reader.
#include "model/tokenizer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <queue>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>

#include "model/pretokenizer.h"
#include "model/tokenizer_vocab.h"

namespace lightserve::model {
namespace {

// Token texts the pinned llama.cpp treats as end of generation (and as control tokens, whatever
// the file says) when present: its EOG list and its fill-in-the-middle pad / repo / separator.
constexpr std::array<const char*, 33> kEndOfGenerationTexts = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>",  // DeepSeek's
    "[e~[",
    // fill-in-the-middle pad / repo / file separator
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>",
    "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>"};

// Fill-in-the-middle prefix / suffix / middle tokens: control tokens in llama.cpp, not EOG.
constexpr std::array<const char*, 24> kControlTexts = {
    "<|fim_prefix|>", "<fim-prefix>",    "<fim_prefix>",    "<｜fim▁begin｜>", "<PRE>",
    "▁<PRE>",         "<|code_prefix|>", "<|prefix|>",      "<|fim_suffix|>",  "<fim-suffix>",
    "<fim_suffix>",   "<｜fim▁hole｜>",  "<SUF>",           "▁<SUF>",          "<|code_suffix|>",
    "<|suffix|>",     "<|fim_middle|>",  "<fim-middle>",    "<fim_middle>",    "<｜fim▁end｜>",
    "<MID>",          "▁<MID>",          "<|code_middle|>", "<|middle|>"};

}  // namespace

namespace detail {

std::string utf8_encode(uint32_t code_point) {
  std::string out;
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
  return out;
}

}  // namespace detail

namespace {

using namespace detail;  // NOLINT: token types and utf8_encode

// GPT-2's reversible byte ↔ printable-character map: printable Latin-1 bytes map to
// themselves, the other 68 bytes to U+0100.. in byte order (space → U+0120, '\n' → U+010A).
struct ByteAlphabet {
  std::array<uint16_t, 256> code_point_of_byte{};
  std::array<int16_t, 0x180> byte_of_code_point{};  // −1 when not in the alphabet

  ByteAlphabet() {
    byte_of_code_point.fill(-1);
    uint16_t next_extra = 0x100;
    for (int byte = 0; byte < 256; ++byte) {
      const bool printable =
          (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
      code_point_of_byte[byte] = printable ? static_cast<uint16_t>(byte) : next_extra++;
      byte_of_code_point[code_point_of_byte[byte]] = static_cast<int16_t>(byte);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet kAlphabet;
  return kAlphabet;
}

// Maps a vocabulary string (GPT-2 alphabet) back to the bytes it stands for. Characters outside
// the alphabet are kept as their own UTF-8.
std::string alphabet_to_bytes(std::string_view text) {
  const auto& alphabet = byte_alphabet();
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    if (lead >= 0xC0 && lead < 0xE0 && i + 1 < text.size()) {
      const uint32_t code_point =
          ((lead & 0x1Fu) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3Fu);
      if (code_point < alphabet.byte_of_code_point.size() &&
          alphabet.byte_of_code_point[code_point] >= 0) {
        out.push_back(static_cast<char>(alphabet.byte_of_code_point[code_point]));
        i += 2;
        continue;
      }
    } else if (lead < 0x80 && alphabet.byte_of_code_point[lead] >= 0) {
      out.push_back(static_cast<char>(lead));
      ++i;
      continue;
    }
    out.push_back(text[i]);  // outside the alphabet: copy the byte through
    ++i;
  }
  return out;
}

std::string bytes_to_alphabet(std::string_view bytes) {
  const auto& alphabet = byte_alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += utf8_encode(alphabet.code_point_of_byte[static_cast<uint8_t>(c)]);
  return out;
}

// Makes `text` what llama.cpp tokenizes: it decodes UTF-8 leniently (overlong forms and
// surrogates are accepted as code points) and re-encodes, and each byte that does not start a
// complete sequence becomes U+FFFD. Code points above U+10FFFF, which make llama.cpp throw, are
// treated as invalid too. Returns `text` itself when nothing changes (the common case).
std::string_view normalize_utf8(std::string_view text, std::string& storage) {
  const auto byte_at = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const auto continuation = [&](size_t i) {
    return i < text.size() && (byte_at(i) & 0xC0) == 0x80;
  };
  bool changed = false;
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t lead = byte_at(i);
    size_t length = 0;
    uint32_t code_point = 0;
    if (lead < 0x80) {
      length = 1;
      code_point = lead;
    } else if ((lead & 0xE0) == 0xC0 && continuation(i + 1)) {
      length = 2;
      code_point = ((lead & 0x1Fu) << 6) | (byte_at(i + 1) & 0x3Fu);
    } else if ((lead & 0xF0) == 0xE0 && continuation(i + 1) && continuation(i + 2)) {
      length = 3;
      code_point =
          ((lead & 0x0Fu) << 12) | ((byte_at(i + 1) & 0x3Fu) << 6) | (byte_at(i + 2) & 0x3Fu);
    } else if ((lead & 0xF8) == 0xF0 && continuation(i + 1) && continuation(i + 2) &&
               continuation(i + 3)) {
      length = 4;
      code_point = ((lead & 0x07u) << 18) | ((byte_at(i + 1) & 0x3Fu) << 12) |
                   ((byte_at(i + 2) & 0x3Fu) << 6) | (byte_at(i + 3) & 0x3Fu);
    }
    const bool invalid = length == 0 || code_point > 0x10FFFF;
    // Canonical: re-encoding gives the same bytes (not an overlong form).
    const bool canonical = !invalid && (length == 1 || (length == 2 && code_point >= 0x80) ||
                                        (length == 3 && code_point >= 0x800) ||
                                        (length == 4 && code_point >= 0x10000));
    if (!changed && canonical) {
      i += length;
      continue;
    }
    if (!changed) {
      changed = true;
      storage.assign(text.substr(0, i));
    }
    if (invalid) {
      storage += "\xEF\xBF\xBD";  // U+FFFD for the one offending byte
      i += 1;
      continue;
    }
    storage += canonical ? std::string(text.substr(i, length)) : utf8_encode(code_point);
    i += length;
  }
  return changed ? std::string_view(storage) : text;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

class BpeTokenizer final : public VocabTokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> build(TokenizerSpec spec);

 private:
  struct Merge {
    int32_t rank;
    int32_t result;  // token id of the merged pair
  };
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    int32_t rank;
    int32_t left;  // symbol index
    int32_t right;
    int32_t left_id;
    int32_t right_id;
    bool operator<(const Candidate& other) const {  // max-heap: lowest rank, then leftmost, on top
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  // Per-run scratch space, reused across the pieces of one run of text.
  struct Scratch {
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    std::vector<std::string_view> pieces;
    std::string normalized;  // the run's text after normalize_utf8, when it changed
  };

  void encode_text(std::string_view text, bool after_special,
                   std::vector<int32_t>& out) const override;
  void encode_piece(std::string_view piece, Scratch& scratch, std::vector<int32_t>& out) const;
  void push_candidate(int32_t left, Scratch& scratch) const;

  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_token_{};  // token of each byte's alphabet character, or −1
};

Result<std::unique_ptr<Tokenizer>> BpeTokenizer::build(TokenizerSpec spec) {
  auto pre = PreTokenizer::for_name(spec.pre);
  if (!pre) return pre.error();
  if (spec.merges.empty()) return Error{"tokenizer.ggml.merges is missing or empty"};
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  if (Status status = tok->init_vocabulary(spec); !status) return Error{status.message()};
  tok->pre_tokenizer_ = std::move(pre).value();

  tok->merges_.reserve(spec.merges.size() * 2);
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const std::string& merge = spec.merges[rank];
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
    if (space == std::string::npos || space + 1 >= merge.size()) {
      return Error{"tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" + merge +
                   "' is not two tokens separated by a space"};
    }
    const std::string_view left(merge.data(), space);
    const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    const auto left_id = tok->id_of(left);
    const auto right_id = tok->id_of(right);
    const auto result_id = tok->id_of(std::string(left) + std::string(right));
    if (!left_id || !right_id || !result_id) {
      const std::string_view missing = !left_id ? left : !right_id ? right : "their concatenation";
      return Error{"tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" + merge +
                   "' references a token not in the vocabulary: '" + std::string(missing) + "'"};
    }
    // The first (lowest-ranked) entry of a repeated pair wins.
    tok->merges_.emplace(pair_key(*left_id, *right_id),
                         Merge{static_cast<int32_t>(rank), *result_id});
  }

  const auto& alphabet = byte_alphabet();
  for (int byte = 0; byte < 256; ++byte) {
    tok->byte_token_[byte] =
        tok->id_of(utf8_encode(alphabet.code_point_of_byte[byte])).value_or(-1);
  }
  for (size_t i = 0; i < tok->tokens_.size(); ++i) {
    const int32_t type = tok->types_[i];
    if (type == kNormal || type == kByte || type == kUndefined) {
      tok->pieces_[i] = alphabet_to_bytes(tok->tokens_[i]);
    } else if (type == kUserDefined) {
      tok->pieces_[i] = tok->tokens_[i];
    }
  }
  tok->finish_specials();
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

void BpeTokenizer::push_candidate(int32_t left, Scratch& scratch) const {
  if (left < 0) return;
  const Symbol& left_symbol = scratch.symbols[left];
  const int32_t right = left_symbol.next;
  if (right < 0) return;
  const Symbol& right_symbol = scratch.symbols[right];
  if (left_symbol.id < 0 || right_symbol.id < 0) return;
  const auto it = merges_.find(pair_key(left_symbol.id, right_symbol.id));
  if (it == merges_.end()) return;
  scratch.heap.push_back({it->second.rank, left, right, left_symbol.id, right_symbol.id});
  std::push_heap(scratch.heap.begin(), scratch.heap.end());
}

void BpeTokenizer::encode_piece(std::string_view piece, Scratch& scratch,
                                std::vector<int32_t>& out) const {
  if (pre_tokenizer_->ignore_merges()) {
    if (const auto id = id_of(bytes_to_alphabet(piece))) {
      out.push_back(*id);
      return;
    }
  }
  if (piece.size() == 1) {
    const int32_t id = byte_token_[static_cast<uint8_t>(piece[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  auto& symbols = scratch.symbols;
  symbols.clear();
  const auto count = static_cast<int32_t>(piece.size());
  for (int32_t i = 0; i < count; ++i) {
    symbols.push_back(
        {byte_token_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < count ? i + 1 : -1});
  }
  scratch.heap.clear();
  for (int32_t i = 0; i + 1 < count; ++i) push_candidate(i, scratch);
  while (!scratch.heap.empty()) {
    std::pop_heap(scratch.heap.begin(), scratch.heap.end());
    const Candidate candidate = scratch.heap.back();
    scratch.heap.pop_back();
    Symbol& left = symbols[candidate.left];
    // Stale when either side has been merged since: ids changed or no longer adjacent.
    if (left.id != candidate.left_id || left.next != candidate.right ||
        symbols[candidate.right].id != candidate.right_id) {
      continue;
    }
    Symbol& right = symbols[candidate.right];
    left.id = merges_.at(pair_key(candidate.left_id, candidate.right_id)).result;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = candidate.left;
    right.id = -2;  // dead
    right.next = -1;
    push_candidate(left.prev, scratch);
    push_candidate(candidate.left, scratch);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    // A byte whose alphabet character is not in the vocabulary has no token: llama.cpp drops it.
    if (symbols[i].id >= 0) out.push_back(symbols[i].id);
  }
}

void BpeTokenizer::encode_text(std::string_view text, bool /*after_special*/,
                               std::vector<int32_t>& out) const {
  Scratch scratch;
  const std::string_view raw = normalize_utf8(text, scratch.normalized);
  pre_tokenizer_->split(raw, scratch.pieces);
  for (std::string_view piece : scratch.pieces) encode_piece(piece, scratch, out);
}

}  // namespace

// --- VocabTokenizer: what both tokenizers share -----------------------------------------------

namespace detail {

Status VocabTokenizer::init_vocabulary(TokenizerSpec& spec) {
  if (spec.tokens.empty()) return Error{"tokenizer.ggml.tokens is missing or empty"};
  if (spec.tokens.size() > static_cast<size_t>(INT32_MAX)) {
    return Error{"tokenizer.ggml.tokens has too many entries"};
  }
  const size_t num_tokens = spec.tokens.size();
  if (!spec.token_types.empty() && spec.token_types.size() != num_tokens) {
    return Error{"tokenizer.ggml.token_type has " + std::to_string(spec.token_types.size()) +
                 " entries but tokenizer.ggml.tokens has " + std::to_string(num_tokens)};
  }
  model_name_ = std::move(spec.model_name);
  tokens_ = std::move(spec.tokens);
  types_ = std::move(spec.token_types);
  if (types_.empty()) types_.assign(num_tokens, kNormal);
  token_ids_.reserve(num_tokens * 2);
  for (size_t i = 0; i < num_tokens; ++i) {
    const int32_t type = types_[i];
    if (type < kUndefined || type > kByte) {
      return Error{"tokenizer.ggml.token_type[" + std::to_string(i) +
                   "] = " + std::to_string(type) + " is not a known token type"};
    }
    if (tokens_[i].empty()) {
      return Error{"tokenizer.ggml.tokens[" + std::to_string(i) + "] is empty"};
    }
    const auto [it, inserted] =
        token_ids_.emplace(std::string_view(tokens_[i]), static_cast<int32_t>(i));
    if (!inserted) {
      return Error{"duplicate token '" + tokens_[i] + "' at ids " + std::to_string(it->second) +
                   " and " + std::to_string(i)};
    }
  }

  const struct {
    const char* key;
    int32_t id;
  } special_ids[] = {{"bos_token_id", spec.bos_id},
                     {"eos_token_id", spec.eos_id},
                     {"unknown_token_id", spec.unk_id},
                     {"padding_token_id", spec.pad_id}};
  for (const auto& special : special_ids) {
    if (special.id < -1 || special.id >= static_cast<int64_t>(num_tokens)) {
      return Error{std::string("tokenizer.ggml.") + special.key + " = " +
                   std::to_string(special.id) + " is outside the vocabulary (size " +
                   std::to_string(num_tokens) + ")"};
    }
  }
  if (spec.add_bos && spec.bos_id < 0) {
    return Error{"tokenizer.ggml.add_bos_token is true but there is no bos_token_id"};
  }
  bos_id_ = spec.bos_id;
  eos_id_ = spec.eos_id;
  add_bos_ = spec.add_bos;

  end_of_generation_.assign(num_tokens, false);
  for (const char* text : kEndOfGenerationTexts) {
    if (const auto id = id_of(text)) {
      end_of_generation_[*id] = true;
      types_[*id] = kControl;  // as llama.cpp: control tokens whatever the file says
    }
  }
  for (const char* text : kControlTexts) {
    if (const auto id = id_of(text)) types_[*id] = kControl;
  }
  // llama.cpp's two exceptions: with <|return|> and <|call|> (gpt-oss), or <|calls|> and
  // <|flush|> (solar-open), <|end|> is a user-defined token, not an end; with <|tool_response>
  // or <|plamo:eos|> (gemma4, plamo), </s> is a normal token.
  const auto has = [&](const char* text) { return id_of(text).has_value(); };
  if (const auto end = id_of("<|end|>");
      end && ((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>")))) {
    end_of_generation_[*end] = false;
    types_[*end] = kUserDefined;
  }
  if (const auto s = id_of("</s>"); s && (has("<|tool_response>") || has("<|plamo:eos|>"))) {
    end_of_generation_[*s] = false;
    types_[*s] = kNormal;
  }
  if (eos_id_ >= 0) end_of_generation_[eos_id_] = true;
  pieces_.assign(num_tokens, {});
  return Status::Ok();
}

void VocabTokenizer::finish_specials() {
  specials_.clear();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const int32_t type = types_[i];
    if (type == kControl || type == kUserDefined || type == kUnknown) {
      specials_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
  mark_strip_after(model_name_);
}

// llama.cpp sets RSTRIP by model name: for Phi-3 (general.name containing "phi-3" or "phi3",
// any case) every special token and </s> swallow the whitespace after them, except <unk>, <s>
// and <|endoftext|>. No other family we load strips.
void VocabTokenizer::mark_strip_after(std::string_view model_name) {
  strip_after_.assign(tokens_.size(), false);
  std::string lower(model_name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("phi-3") == std::string::npos && lower.find("phi3") == std::string::npos) return;
  for (int32_t id : specials_) strip_after_[static_cast<size_t>(id)] = true;
  if (const auto id = id_of("</s>")) strip_after_[static_cast<size_t>(*id)] = true;
  for (std::string_view text : {"<unk>", "<s>", "<|endoftext|>"}) {
    if (const auto id = id_of(text)) strip_after_[static_cast<size_t>(*id)] = false;
  }
}

// Splits out special tokens as llama.cpp does: each special token in turn (longest first) is
// cut out of whatever raw text is left. Without parse_special only user-defined tokens are.
std::vector<VocabTokenizer::Fragment> VocabTokenizer::split_special(std::string_view text,
                                                                    bool parse_special) const {
  std::vector<Fragment> fragments{{-1, 0, text.size()}};
  std::vector<Fragment> next;
  for (int32_t id : specials_) {
    if (!parse_special && types_[id] != kUserDefined) continue;
    const std::string& special = tokens_[id];
    if (text.find(special) == std::string_view::npos) continue;  // cheap common case
    next.clear();
    for (const Fragment& fragment : fragments) {
      if (fragment.token >= 0) {
        next.push_back(fragment);
        continue;
      }
      size_t begin = fragment.begin;
      while (begin < fragment.end) {
        const size_t found = text.substr(0, fragment.end).find(special, begin);
        if (found == std::string_view::npos) break;
        if (found > begin) next.push_back({-1, begin, found});
        next.push_back({id, found, found + special.size()});
        begin = found + special.size();
        if (strip_after_[id]) {
          while (begin < fragment.end && std::isspace(static_cast<unsigned char>(text[begin]))) {
            ++begin;
          }
        }
      }
      if (begin < fragment.end) next.push_back({-1, begin, fragment.end});
    }
    fragments.swap(next);
  }
  return fragments;
}

std::vector<int32_t> VocabTokenizer::encode(std::string_view text, bool add_bos,
                                            bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  if (text.empty()) return out;
  bool after_special = true;
  for (const Fragment& fragment : split_special(text, parse_special)) {
    if (fragment.token >= 0) {
      out.push_back(fragment.token);
      after_special = true;
      continue;
    }
    encode_text(text.substr(fragment.begin, fragment.end - fragment.begin), after_special, out);
    after_special = false;
  }
  return out;
}

std::string VocabTokenizer::token_bytes(int32_t id, bool render_special) const {
  if (!valid(id)) return {};
  const auto index = static_cast<size_t>(id);
  const int32_t type = types_[index];
  if (render_special && (type == kControl || type == kUnknown || type == kUnused)) {
    return tokens_[index];
  }
  return pieces_[index];
}

std::string VocabTokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id, render_special);
  return out;
}

const std::string& VocabTokenizer::token_text(int32_t id) const {
  static const std::string kEmpty;
  return valid(id) ? tokens_[static_cast<size_t>(id)] : kEmpty;
}

std::optional<int32_t> VocabTokenizer::find_token(std::string_view text) const {
  return id_of(text);
}

}  // namespace detail

namespace {
// Reads an optional integer id key; absent → −1.
Status read_id(const GgufFile& file, std::string_view key, int32_t& id) {
  auto value = file.get_int(key);
  if (!value) return value.error();
  if (!value.value()) return Status::Ok();
  const int64_t raw = *value.value();
  if (raw < -1 || raw > INT32_MAX) {
    return Error{std::string(key) + " = " + std::to_string(raw) + " is outside the vocabulary"};
  }
  id = static_cast<int32_t>(raw);
  return Status::Ok();
}

// Reads an optional float array (tokenizer.ggml.scores); absent → empty.
Status read_scores(const GgufFile& file, std::string_view key, std::vector<float>& scores) {
  const GgufValue* value = file.find(key);
  if (value == nullptr) return Status::Ok();
  const auto* array = std::get_if<GgufArray>(&value->data);
  if (array == nullptr ||
      (array->element_type != GgufValueType::kF32 && array->element_type != GgufValueType::kF64)) {
    return Error{std::string(key) + " is not an array of floats"};
  }
  scores.reserve(array->values.size());
  for (const GgufValue& element : array->values) {
    scores.push_back(static_cast<float>(std::get<double>(element.data)));
  }
  return Status::Ok();
}

constexpr const char* kSupportedModels =
    "supported: 'gpt2' (byte-level BPE) and 'llama' (SentencePiece with byte fallback)";

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_spec(TokenizerSpec spec) {
  if (spec.model == "gpt2") return BpeTokenizer::build(std::move(spec));
  if (spec.model == "llama") return detail::build_spm_tokenizer(std::move(spec));
  return Error{"unsupported tokenizer.ggml.model '" + spec.model + "' (" + kSupportedModels + ")"};
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufFile& file) {
  TokenizerSpec spec;
  auto model = file.get_string("tokenizer.ggml.model");
  if (!model) return model.error();
  if (!model.value()) return Error{"tokenizer.ggml.model is missing"};
  spec.model = *model.value();
  const bool spm = spec.model == "llama";
  if (spec.model != "gpt2" && !spm) {
    return Error{"unsupported tokenizer.ggml.model '" + spec.model + "' (" + kSupportedModels +
                 ")"};
  }
  auto pre = file.get_string("tokenizer.ggml.pre");
  if (!pre) return pre.error();
  spec.pre = pre.value().value_or("default");

  auto tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return tokens.error();
  if (!tokens.value()) return Error{"tokenizer.ggml.tokens is missing"};
  spec.tokens = std::move(*tokens.value());

  if (!spm) {
    auto merges = file.get_string_array("tokenizer.ggml.merges");
    if (!merges) return merges.error();
    if (!merges.value()) return Error{"tokenizer.ggml.merges is missing"};
    spec.merges = std::move(*merges.value());
  } else if (Status status = read_scores(file, "tokenizer.ggml.scores", spec.scores); !status) {
    return Error{status.message()};
  }

  auto types = file.get_int_array("tokenizer.ggml.token_type");
  if (!types) return types.error();
  if (types.value()) {
    spec.token_types.reserve(types.value()->size());
    for (size_t i = 0; i < types.value()->size(); ++i) {
      const int64_t type = (*types.value())[i];
      if (type < kUndefined || type > kByte) {
        return Error{"tokenizer.ggml.token_type[" + std::to_string(i) +
                     "] = " + std::to_string(type) + " is not a known token type"};
      }
      spec.token_types.push_back(static_cast<int32_t>(type));
    }
  }

  // SentencePiece vocabularies default to <unk> 0, <s> 1, </s> 2 and a BOS (as llama.cpp).
  if (spm) {
    spec.unk_id = 0;
    spec.bos_id = 1;
    spec.eos_id = 2;
  }
  for (const auto& [key, id] :
       {std::pair<const char*, int32_t*>{"tokenizer.ggml.bos_token_id", &spec.bos_id},
        {"tokenizer.ggml.eos_token_id", &spec.eos_id},
        {"tokenizer.ggml.unknown_token_id", &spec.unk_id},
        {"tokenizer.ggml.padding_token_id", &spec.pad_id}}) {
    if (Status status = read_id(file, key, *id); !status) return Error{status.message()};
  }
  auto name = file.get_string("general.name");
  if (!name) return name.error();
  spec.model_name = name.value().value_or("");
  const bool bos_by_default = spm || PreTokenizer::default_add_bos(spec.pre);
  for (const auto& [key, flag, fallback] :
       {std::tuple<const char*, bool*, bool>{"tokenizer.ggml.add_bos_token", &spec.add_bos,
                                             bos_by_default},
        {"tokenizer.ggml.add_space_prefix", &spec.add_space_prefix, spm}}) {
    auto value = file.get_bool(key);
    if (!value) return value.error();
    *flag = value.value().value_or(fallback);
  }
  return from_spec(std::move(spec));
}

}  // namespace lightserve::model
