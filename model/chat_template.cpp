// ChatML rendering. We do not run Jinja: a ChatML template renders every message as
// "<|im_start|>role\ncontent<|im_end|>\n", so we only need to recognise the format and find the
// default system prompt such templates insert (SmolLM2, Qwen) when the conversation has none.
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

Result<ChatTemplate> ChatTemplate::from_gguf(const GgufFile& file) {
  auto text = file.get_string("tokenizer.chat_template");
  if (!text) return text.error();
  if (!text.value()) return Error{"the model file has no tokenizer.chat_template"};
  const std::string& tmpl = *text.value();
  if (tmpl.find(kStart) == std::string::npos || tmpl.find(kEnd) == std::string::npos) {
    return Error{
        "tokenizer.chat_template is not ChatML (no <|im_start|> / <|im_end|>): "
        "only ChatML templates are supported"};
  }
  ChatTemplate result;
  result.default_system_ = find_default_system(tmpl);
  return result;
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages,
                                 bool add_generation_prompt) const {
  std::string out;
  const auto append_turn = [&out](std::string_view role, std::string_view content) {
    out.append(kStart).append(role).append("\n").append(content).append(kEnd).append("\n");
  };
  if (!messages.empty() && messages.front().role != "system" && !default_system_.empty()) {
    append_turn("system", default_system_);
  }
  for (const ChatMessage& message : messages) append_turn(message.role, message.content);
  if (add_generation_prompt) out.append(kStart).append("assistant\n");
  return out;
}

}  // namespace lightserve::model
