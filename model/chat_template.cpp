// Chat formatting without a Jinja engine: each supported family's template renders messages in a
// fixed way, so we recognise the family from the template text (or a name given with
// --chat-template) and reproduce its output: ChatML (with the default system prompt some
// templates insert), Llama-3, Llama-3.1 (its system header with the knowledge date), Mistral
// "v1" ([INST] with the system prompt before the first user turn) and Llama-2 (<<SYS>>).
// tests/golden/chat_templates.json holds what the real templates render, through jinja2.
#include <array>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "model/tokenizer.h"

namespace lightserve::model {
namespace {

constexpr std::string_view kStart = "<|im_start|>";
constexpr std::string_view kEnd = "<|im_end|>";

// Undoes the escapes a Jinja string literal may use for the prompt text.
std::string unescape_literal(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      const char next = text[++i];
      switch (next) {
        case 'n':
          out.push_back('\n');
          break;
        case 't':
          out.push_back('\t');
          break;
        default:
          out.push_back(next);
          break;  // \' \" and \\ stand for themselves
      }
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The text of a literal "<|im_start|>system\n...<|im_end|>" in the template, or empty when the
// template has none (a system turn built from a message is an expression, not a literal).
std::string find_default_system(std::string_view tmpl) {
  const std::string marker = std::string(kStart) + "system";
  for (size_t at = tmpl.find(marker); at != std::string_view::npos;
       at = tmpl.find(marker, at + 1)) {
    size_t begin = at + marker.size();
    if (tmpl.substr(begin, 1) == "\n") {
      begin += 1;
    } else if (tmpl.substr(begin, 2) == "\\n") {
      begin += 2;
    } else {
      continue;
    }
    const size_t end = tmpl.find(kEnd, begin);
    if (end == std::string_view::npos) continue;
    const std::string_view body = tmpl.substr(begin, end - begin);
    // Template syntax inside means the content comes from an expression, not a default.
    if (body.empty() || body.find_first_of("{}") != std::string_view::npos ||
        body.find("' +") != std::string_view::npos || body.find("\" +") != std::string_view::npos) {
      continue;
    }
    return unescape_literal(body);
  }
  return {};
}

}  // namespace

namespace {

constexpr std::array<std::pair<ChatFormat, std::string_view>, 5> kFormatNames = {{
    {ChatFormat::kChatML, "chatml"},
    {ChatFormat::kLlama3, "llama3"},
    {ChatFormat::kLlama31, "llama3.1"},
    {ChatFormat::kMistralV1, "mistral-v1"},
    {ChatFormat::kLlama2, "llama2"},
}};

// Python's str.strip() / Jinja's trim over ASCII whitespace (and the separators it also strips).
std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\n\r\v\f\x1c\x1d\x1e\x1f";
  const size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

// The family a template text belongs to, by the markers only its family's templates hold.
std::optional<ChatFormat> recognise(std::string_view tmpl) {
  const auto has = [&](std::string_view marker) { return tmpl.find(marker) != std::string::npos; };
  if (has(kStart) && has(kEnd)) return ChatFormat::kChatML;
  if (has("<|start_header_id|>") && has("<|eot_id|>")) {
    return has("Cutting Knowledge Date") ? ChatFormat::kLlama31 : ChatFormat::kLlama3;
  }
  if (has("<<SYS>>") && has("[INST] ")) return ChatFormat::kLlama2;
  if (has("' [INST] '") || has("\" [INST] \"")) return ChatFormat::kMistralV1;
  return std::nullopt;
}

Error alternation_error() {
  return Error{
      "this model's chat template needs the roles to alternate user/assistant/user/... after an "
      "optional first system message"};
}

}  // namespace

std::string_view ChatTemplate::name() const {
  for (const auto& [format, name] : kFormatNames) {
    if (format == format_) return name;
  }
  return "?";
}

Result<ChatTemplate> ChatTemplate::from_text(std::string_view text, const Tokenizer& tokenizer) {
  std::optional<ChatFormat> format;
  for (const auto& [f, name] : kFormatNames) {
    if (text == name) format = f;
  }
  const bool named = format.has_value();
  if (!named) format = recognise(text);
  if (!format) {
    std::string names;
    for (const auto& [f, name] : kFormatNames) names.append(names.empty() ? "" : ", ").append(name);
    return Error{"the chat template is not one lightserve can render (" + names +
                 "); give one of those names with --chat-template"};
  }
  ChatTemplate result;
  result.format_ = *format;
  if (!named && *format == ChatFormat::kChatML) result.default_system_ = find_default_system(text);
  const int32_t bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
  if (bos >= 0) result.bos_ = tokenizer.token_text(bos);
  if (eos >= 0) result.eos_ = tokenizer.token_text(eos);
  return result;
}

Result<std::string> ChatTemplate::read_argument(const std::string& value) {
  for (const auto& [format, name] : kFormatNames) {
    if (value == name) return value;
  }
  std::ifstream in(value, std::ios::binary);
  if (!in) {
    std::string names;
    for (const auto& [f, name] : kFormatNames) names.append(names.empty() ? "" : ", ").append(name);
    return Error{"'" + value + "' is neither a chat format (" + names + ") nor a readable file"};
  }
  std::string text{std::istreambuf_iterator<char>(in), {}};
  if (!recognise(text)) {
    return Error{value + ": not a chat template lightserve can render (ChatML, Llama-3, " +
                 "Llama-3.1, Mistral v1 or Llama-2 chat)"};
  }
  return text;
}

Result<ChatTemplate> ChatTemplate::from_gguf(const GgufFile& file, const Tokenizer& tokenizer) {
  auto text = file.get_string("tokenizer.chat_template");
  if (!text) return text.error();
  if (!text.value()) return Error{"the model file has no tokenizer.chat_template"};
  auto result = from_text(*text.value(), tokenizer);
  if (!result) return Error{"tokenizer.chat_template: " + result.error().message};
  return result;
}

Result<std::string> ChatTemplate::render(std::span<const ChatMessage> messages,
                                         const ChatOptions& options) const {
  std::string date = "26 Jul 2024";  // the Llama-3.1 template's date_string when none is passed
  for (const auto& [key, value] : options.kwargs) {
    if (format_ == ChatFormat::kLlama31 && key == "date_string") {
      date = value;
      continue;
    }
    std::string message = "'chat_template_kwargs." + key + "' is not read by this model's chat ";
    message.append("format (")
        .append(name())
        .append(format_ == ChatFormat::kLlama31 ? "; it reads date_string)" : "; it reads none)");
    return Error{message};
  }
  if (!options.continue_final_message)
    return render_turns(messages, options.add_generation_prompt, date);
  if (options.add_generation_prompt) {
    return Error{
        "'continue_final_message' needs 'add_generation_prompt': false (the final message is "
        "continued, no new turn opened)"};
  }
  if (messages.empty() || messages.back().role != "assistant") {
    return Error{"'continue_final_message' needs the last message to be the assistant's"};
  }
  Result<std::string> rendered = render_turns(messages, false, date);
  if (!rendered) return rendered;
  // The final turn's closing text, which continuing leaves out.
  std::string close;
  switch (format_) {
    case ChatFormat::kChatML:
      close.append(kEnd).append("\n");
      break;
    case ChatFormat::kLlama3:
    case ChatFormat::kLlama31:
      close = "<|eot_id|>";
      break;
    case ChatFormat::kMistralV1:
      close = eos_;
      break;
    case ChatFormat::kLlama2:
      close.append(" ").append(eos_);
      break;
  }
  std::string& out = rendered.value();
  if (out.ends_with(close)) out.resize(out.size() - close.size());
  return rendered;
}

Result<std::string> ChatTemplate::render_turns(std::span<const ChatMessage> messages,
                                               bool add_generation_prompt,
                                               std::string_view date) const {
  std::string out;
  const bool has_system = !messages.empty() && messages.front().role == "system";
  const std::span<const ChatMessage> turns = has_system ? messages.subspan(1) : messages;
  const std::string_view system = has_system ? std::string_view(messages.front().content) : "";
  // The [INST] templates: user at even turns, assistant at odd ones.
  const auto alternates = [&]() {
    for (size_t i = 0; i < turns.size(); ++i) {
      if ((turns[i].role == "user") != (i % 2 == 0)) return false;
    }
    return true;
  };
  switch (format_) {
    case ChatFormat::kChatML: {
      const auto append_turn = [&out](std::string_view role, std::string_view content) {
        out.append(kStart).append(role).append("\n").append(content).append(kEnd).append("\n");
      };
      if (!messages.empty() && !has_system && !default_system_.empty()) {
        append_turn("system", default_system_);
      }
      for (const ChatMessage& m : messages) append_turn(m.role, m.content);
      if (add_generation_prompt) out.append(kStart).append("assistant\n");
      return out;
    }
    case ChatFormat::kLlama3:
    case ChatFormat::kLlama31: {
      const auto append_turn = [&out](std::string_view role, std::string_view content) {
        out.append("<|start_header_id|>").append(role).append("<|end_header_id|>\n\n");
        out.append(trim(content)).append("<|eot_id|>");
      };
      if (format_ == ChatFormat::kLlama31) {
        // Always a system turn, dated as the template does when no date is passed.
        out.append(bos_).append("<|start_header_id|>system<|end_header_id|>\n\n");
        out.append("Cutting Knowledge Date: December 2023\nToday Date: ").append(date);
        out.append("\n\n");
        out.append(trim(system)).append("<|eot_id|>");
        for (const ChatMessage& m : turns) append_turn(m.role, m.content);
      } else {
        if (!messages.empty()) out.append(bos_);
        for (const ChatMessage& m : messages) append_turn(m.role, m.content);
      }
      if (add_generation_prompt) out.append("<|start_header_id|>assistant<|end_header_id|>\n\n");
      return out;
    }
    case ChatFormat::kMistralV1: {
      if (!alternates()) return alternation_error();
      out.append(bos_);
      for (size_t i = 0; i < turns.size(); ++i) {
        if (turns[i].role == "user") {
          out.append(" [INST] ");
          if (i == 0 && has_system) out.append(system).append("\n\n");
          out.append(turns[i].content).append(" [/INST]");
        } else {
          out.append(" ").append(turns[i].content).append(eos_);
        }
      }
      return out;  // the template has no generation prompt: [/INST] opens the answer
    }
    case ChatFormat::kLlama2: {
      if (!alternates()) return alternation_error();
      for (size_t i = 0; i < turns.size(); ++i) {
        std::string content;
        if (i == 0 && has_system) {
          content.append("<<SYS>>\n").append(system).append("\n<</SYS>>\n\n");
        }
        content.append(turns[i].content);
        if (turns[i].role == "user") {
          out.append(bos_).append("[INST] ").append(trim(content)).append(" [/INST]");
        } else {
          out.append(" ").append(trim(content)).append(" ").append(eos_);
        }
      }
      return out;
    }
  }
  return out;
}

}  // namespace lightserve::model
