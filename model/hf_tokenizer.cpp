// tokenizer.json → TokenizerSpec (hf_tokenizer.h).
#include "model/hf_tokenizer.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/pretokenizer.h"
#include "model/tokenizer_vocab.h"

namespace lightserve::model {
namespace {

using nlohmann::json;
using namespace detail;  // NOLINT: token types

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// The pre-tokenizer regexes of the tokenizer.json files llama.cpp names (its
// convert_hf_to_gguf_update.py list): Llama-3's and Qwen2's Split patterns.
constexpr std::string_view kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const json* member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::string string_member(const json& object, std::string_view key) {
  const json* value = member(object, key);
  return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
}

bool bool_member(const json& object, std::string_view key, bool fallback) {
  const json* value = member(object, key);
  return value != nullptr && value->is_boolean() ? value->get<bool>() : fallback;
}

// A special token as tokenizer_config.json writes it: "text" or {"content": "text", ...}.
std::string token_content(const json* value) {
  if (value == nullptr) return {};
  if (value->is_string()) return value->get<std::string>();
  return string_member(*value, "content");
}

// An id as config.json writes it: 5, or [5, 7] (several EOS ids: the first).
int64_t config_id(const json& config, std::string_view key) {
  const json* value = member(config, key);
  if (value != nullptr && value->is_array() && !value->empty()) value = &(*value)[0];
  if (value == nullptr || !value->is_number_integer()) return -1;
  return value->get<int64_t>();
}

// llama.cpp's does_token_look_special: added tokens that ought to be control tokens.
bool looks_special(std::string_view text) {
  const auto wrapped = [&](std::string_view open, std::string_view close) {
    return text.size() >= open.size() + close.size() && text.substr(0, open.size()) == open &&
           text.substr(text.size() - close.size()) == close;
  };
  return text == "<pad>" || text == "<mask>" || text == "<2mass>" || text == "[@BOS@]" ||
         wrapped("<|", "|>") || wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") ||
         wrapped("<unused", ">");
}

bool is_byte_token(std::string_view text) {
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return text.size() == 6 && text.substr(0, 3) == "<0x" && hex(text[3]) && hex(text[4]) &&
         text[5] == '>';
}

// The pre-tokenizer steps, flattened out of a Sequence.
std::vector<const json*> pre_tokenizer_steps(const json& tokenizer) {
  std::vector<const json*> steps;
  const json* pre = member(tokenizer, "pre_tokenizer");
  if (pre == nullptr) return steps;
  if (string_member(*pre, "type") == "Sequence") {
    if (const json* list = member(*pre, "pretokenizers"); list != nullptr && list->is_array()) {
      for (const json& step : *list) steps.push_back(&step);
    }
  } else {
    steps.push_back(pre);
  }
  return steps;
}

// Names the byte-level pre-tokenizer as llama.cpp does (tokenizer.ggml.pre), or says why not.
Result<std::string> byte_level_pre(const json& tokenizer, const json& model) {
  const std::vector<const json*> steps = pre_tokenizer_steps(tokenizer);
  std::string shape;  // "Digits+ByteLevel(regex)", for the error
  std::string split_regex;
  bool digits = false, byte_level = false, byte_level_regex = false, other = false;
  for (const json* step : steps) {
    const std::string type = string_member(*step, "type");
    std::string described = type;
    if (type == "ByteLevel") {
      if (bool_member(*step, "add_prefix_space", false)) {
        return Error{"a ByteLevel pre-tokenizer with add_prefix_space is not supported"};
      }
      byte_level = true;
      byte_level_regex = bool_member(*step, "use_regex", true);
      if (byte_level_regex) described += "(regex)";
    } else if (type == "Digits" && bool_member(*step, "individual_digits", false) && !digits) {
      digits = true;
    } else if (type == "Split" && split_regex.empty()) {
      const json* pattern = member(*step, "pattern");
      split_regex = pattern != nullptr ? string_member(*pattern, "Regex") : "";
      if (split_regex.empty() || string_member(*step, "behavior") != "Isolated" ||
          bool_member(*step, "invert", false)) {
        other = true;
      }
    } else {
      other = true;
    }
    shape.append(shape.empty() ? "" : " + ").append(described);
  }
  if (!byte_level) {
    return Error{"byte-level BPE needs a ByteLevel pre-tokenizer; this one is [" + shape + "]"};
  }
  if (!other) {
    if (!digits && split_regex.empty() && byte_level_regex) return std::string("gpt2");
    if (digits && split_regex.empty() && byte_level_regex) return std::string("smollm");
    if (!digits && !byte_level_regex && split_regex == kLlama3Split) {
      // Llama-3 takes a whole piece that is in the vocabulary before merging; DBRX's files
      // share the regex without that rule.
      return std::string(bool_member(model, "ignore_merges", false) ? "llama-bpe" : "dbrx");
    }
    if (!digits && !byte_level_regex && split_regex == kQwen2Split) return std::string("qwen2");
  }
  std::string error = "pre-tokenizer [" + shape + "]";
  if (!split_regex.empty()) error.append(" with Split regex '").append(split_regex).append("'");
  error.append(
      " is not one lightserve knows (GPT-2's ByteLevel, SmolLM's Digits + ByteLevel, Llama-3's "
      "and Qwen2's Split regexes)");
  return Error{error};
}

// Whether the SentencePiece-style file turns spaces into U+2581 and whether it adds one in
// front (tokenizer.ggml.add_space_prefix); an Error when it does not escape spaces at all.
Result<bool> spm_space_prefix(const json& tokenizer) {
  bool escapes = false, prefix = false;
  std::vector<const json*> rules;
  if (const json* normalizer = member(tokenizer, "normalizer")) {
    if (string_member(*normalizer, "type") == "Sequence") {
      if (const json* list = member(*normalizer, "normalizers"); list && list->is_array()) {
        for (const json& rule : *list) rules.push_back(&rule);
      }
    } else {
      rules.push_back(normalizer);
    }
  }
  for (const json* step : pre_tokenizer_steps(tokenizer)) rules.push_back(step);
  for (const json* rule : rules) {
    const std::string type = string_member(*rule, "type");
    if (type == "Prepend" && string_member(*rule, "prepend") == kSpace) prefix = true;
    if (type == "Replace" && string_member(*rule, "content") == kSpace) {
      const json* pattern = member(*rule, "pattern");
      if (pattern != nullptr && string_member(*pattern, "String") == " ") escapes = true;
    }
    if (type == "Metaspace") {
      escapes = true;
      const std::string scheme = string_member(*rule, "prepend_scheme");
      prefix = scheme.empty() ? bool_member(*rule, "add_prefix_space", true) : scheme != "never";
    }
  }
  if (!escapes) {
    return Error{
        "a byte_fallback BPE without a Replace(' ', U+2581) normalizer or Metaspace "
        "pre-tokenizer is not SentencePiece-style; not supported"};
  }
  return prefix;
}

}  // namespace

Result<HfTokenizer> read_hf_tokenizer(const HfTokenizerSources& sources) {
  const std::string file = sources.folder + "/tokenizer.json";
  const auto fail = [&](const std::string& why) { return Error{file + ": " + why}; };
  const json tokenizer = json::parse(sources.tokenizer_json, nullptr, false);
  if (tokenizer.is_discarded() || !tokenizer.is_object()) return fail("not a JSON object");
  json tokenizer_config = json::object(), config = json::object();
  if (!sources.tokenizer_config.empty()) {
    tokenizer_config = json::parse(sources.tokenizer_config, nullptr, false);
    if (tokenizer_config.is_discarded() || !tokenizer_config.is_object()) {
      return Error{sources.folder + "/tokenizer_config.json: not a JSON object"};
    }
  }
  if (!sources.config.empty()) {
    config = json::parse(sources.config, nullptr, false);
    if (config.is_discarded() || !config.is_object()) config = json::object();
  }

  const json* model = member(tokenizer, "model");
  if (model == nullptr || !model->is_object()) return fail("no \"model\" object");
  std::string type = string_member(*model, "type");
  if (type.empty() && member(*model, "merges") != nullptr) type = "BPE";
  if (type != "BPE") {
    return fail("tokenizer model type '" + type +
                "' is not supported (byte-level BPE, as GPT-2 / Llama-3 / Qwen2 / SmolLM2, and "
                "SentencePiece-style BPE with byte_fallback, as Llama-2 / Mistral)");
  }
  const bool spm = bool_member(*model, "byte_fallback", false);

  HfTokenizer out;
  TokenizerSpec& spec = out.spec;
  spec.model = spm ? "llama" : "gpt2";
  if (spm) {
    auto prefix = spm_space_prefix(tokenizer);
    if (!prefix) return fail(prefix.error().message);
    spec.add_space_prefix = prefix.value();
    spec.pre = "default";
  } else {
    if (const json* normalizer = member(tokenizer, "normalizer");
        normalizer != nullptr && string_member(*normalizer, "type") != "NFC") {
      // Qwen2's NFC is dropped as llama.cpp drops it; anything else would change the text.
      return fail("normalizer '" + string_member(*normalizer, "type") +
                  "' is not supported for byte-level BPE");
    }
    auto pre = byte_level_pre(tokenizer, *model);
    if (!pre) return fail(pre.error().message);
    spec.pre = pre.value();
    spec.add_space_prefix = false;
  }

  // Token table: vocab ids, then added tokens over them, then padding to the embedding rows.
  const json* vocab = member(*model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) return fail("model.vocab is not an object");
  std::map<int64_t, std::string> by_id;
  for (const auto& [text, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 22)) {
      return fail("model.vocab['" + text + "'] is not a token id");
    }
    if (!by_id.emplace(id.get<int64_t>(), text).second) {
      return fail("model.vocab gives id " + std::to_string(id.get<int64_t>()) + " twice");
    }
  }
  std::map<int64_t, bool> added_special;  // id → special
  if (const json* added = member(tokenizer, "added_tokens"); added != nullptr) {
    if (!added->is_array()) return fail("added_tokens is not an array");
    for (const json& token : *added) {
      const json* id = member(token, "id");
      const std::string content = string_member(token, "content");
      if (id == nullptr || !id->is_number_integer() || id->get<int64_t>() < 0 ||
          id->get<int64_t>() >= (1 << 22) || content.empty()) {
        return fail("an added_tokens entry has no valid id and content");
      }
      by_id[id->get<int64_t>()] = content;
      added_special[id->get<int64_t>()] = bool_member(token, "special", false);
    }
  }
  if (by_id.empty()) return fail("the vocabulary is empty");
  int64_t size = by_id.rbegin()->first + 1;
  if (sources.vocab_size > 0) {
    if (sources.vocab_size < size) {
      return Error{sources.folder + "/config.json: vocab_size " +
                   std::to_string(sources.vocab_size) + " is smaller than tokenizer.json's " +
                   std::to_string(size) + " token ids"};
    }
    size = sources.vocab_size;
  }
  spec.tokens.resize(static_cast<size_t>(size));
  spec.token_types.assign(static_cast<size_t>(size), kNormal);
  std::unordered_map<std::string, int32_t> id_of;
  for (int64_t id = 0; id < size; ++id) {
    const auto i = static_cast<size_t>(id);
    const auto it = by_id.find(id);
    if (it == by_id.end()) {
      spec.tokens[i] = std::string("[PAD").append(std::to_string(id)).append("]");
      spec.token_types[i] = kUnused;
      continue;
    }
    spec.tokens[i] = it->second;
    id_of.emplace(it->second, static_cast<int32_t>(id));
    if (const auto added = added_special.find(id); added != added_special.end()) {
      spec.token_types[i] = added->second || looks_special(it->second) ? kControl : kUserDefined;
    } else if (spm && is_byte_token(it->second)) {
      spec.token_types[i] = kByte;
    }
  }

  // Merges: "left right" strings or [left, right] pairs; rank = position.
  const json* merges = member(*model, "merges");
  if (merges == nullptr || !merges->is_array()) return fail("model.merges is not an array");
  if (spm) spec.scores.assign(static_cast<size_t>(size), 0.0f);
  std::vector<bool> scored(spm ? static_cast<size_t>(size) : 0, false);
  spec.merges.reserve(merges->size());
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& merge = (*merges)[rank];
    std::string left, right;
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return fail("merge " + std::to_string(rank) + " '" + text + "' is not 'left right'");
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return fail("merge " + std::to_string(rank) + " is neither 'left right' nor [left, right]");
    }
    if (spm) {
      // SentencePiece merges the pair whose joined piece scores highest: the earliest merge.
      const auto joined = id_of.find(left + right);
      if (joined != id_of.end() && !scored[static_cast<size_t>(joined->second)]) {
        scored[static_cast<size_t>(joined->second)] = true;
        spec.scores[static_cast<size_t>(joined->second)] = -static_cast<float>(rank);
      }
    } else {
      spec.merges.push_back(left.append(" ").append(right));
    }
  }

  // Special ids: tokenizer_config.json's token texts, then config.json's ids.
  const auto lookup = [&](const std::string& text) {
    const auto it = id_of.find(text);
    return it == id_of.end() ? -1 : it->second;
  };
  if (spm) {
    spec.unk_id = lookup(string_member(*model, "unk_token"));
    if (spec.unk_id >= 0) spec.token_types[static_cast<size_t>(spec.unk_id)] = kUnknown;
  }
  for (const auto& [key, id] : {std::pair<const char*, int32_t*>{"bos", &spec.bos_id},
                                {"eos", &spec.eos_id},
                                {"pad", &spec.pad_id}}) {
    *id = lookup(token_content(member(tokenizer_config, std::string(key) + "_token")));
    const int64_t from_config = config_id(config, std::string(key) + "_token_id");
    if (*id < 0 && from_config >= 0 && from_config < size) *id = static_cast<int32_t>(from_config);
  }

  // BOS: tokenizer_config.json's add_bos_token, else the post-processor's template (Llama-3's
  // TemplateProcessing puts <|begin_of_text|> first), else llama.cpp's default for the family.
  const json* add_bos = member(tokenizer_config, "add_bos_token");
  if (add_bos != nullptr && add_bos->is_boolean()) {
    spec.add_bos = add_bos->get<bool>();
  } else if (const json* post = member(tokenizer, "post_processor");
             post != nullptr && string_member(*post, "type") == "TemplateProcessing") {
    const json* single = member(*post, "single");
    const json* first = single != nullptr && single->is_array() && !single->empty()
                            ? member((*single)[0], "SpecialToken")
                            : nullptr;
    spec.add_bos = first != nullptr;
    if (first != nullptr && spec.bos_id < 0) spec.bos_id = lookup(string_member(*first, "id"));
  } else {
    spec.add_bos = spm || PreTokenizer::default_add_bos(spec.pre);
  }

  // Chat template: a string, or a list of named templates (the "default" one).
  if (const json* chat = member(tokenizer_config, "chat_template")) {
    if (chat->is_string()) {
      out.chat_template = chat->get<std::string>();
    } else if (chat->is_array()) {
      for (const json& named : *chat) {
        if (string_member(named, "name") == "default") {
          out.chat_template = string_member(named, "template");
        }
      }
    }
  }
  spec.model_name = string_member(config, "_name_or_path");
  return out;
}

}  // namespace lightserve::model
