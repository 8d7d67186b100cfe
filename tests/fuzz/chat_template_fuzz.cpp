// libFuzzer target for chat rendering (model/chat_template.cpp): fuzzed messages through the
// default model's own template, and fuzzed template strings through ChatTemplate::from_gguf (a
// one-key GGUF built in memory), then rendering. Input: one flags byte, then fields separated by
// NUL bytes: [the template, when flag 1 is set] role, content, role, content, ...
// What must hold: from_gguf takes a template with <|im_start|> and <|im_end|> as ChatML and
// anything else as another family or not at all; a default system prompt never holds template
// syntax ({ or }); a ChatML render() is exactly
// the optional default system turn, one "<|im_start|>role\ncontent<|im_end|>\n" per message and
// the generation prompt when asked; any family renders or refuses with a message, and the
// rendered text tokenizes into ids of the vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/check.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using lightserve::model::ChatMessage;
using lightserve::model::ChatTemplate;
using lightserve::model::GgufFile;
using lightserve::model::Tokenizer;

const Tokenizer* tokenizer = nullptr;
const ChatTemplate* model_template = nullptr;

template <typename T>
void put(std::vector<uint8_t>& out, T value) {
  const size_t at = out.size();
  out.resize(at + sizeof value);
  std::memcpy(out.data() + at, &value, sizeof value);
}

void put_string(std::vector<uint8_t>& out, std::string_view text) {
  put<uint64_t>(out, text.size());
  out.insert(out.end(), text.begin(), text.end());
}

// A GGUF v3 file with no tensors and the one key tokenizer.chat_template = `text`.
std::vector<uint8_t> gguf_with_template(std::string_view text) {
  std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
  put<uint32_t>(out, 3);  // version
  put<uint64_t>(out, 0);  // tensors
  put<uint64_t>(out, 1);  // metadata keys
  put_string(out, "tokenizer.chat_template");
  put<uint32_t>(out, 8);  // GGUF string
  put_string(out, text);
  out.resize((out.size() + 31) / 32 * 32, 0);  // the data section's alignment
  return out;
}

std::vector<std::string_view> split_fields(std::string_view bytes) {
  std::vector<std::string_view> fields;
  size_t begin = 0;
  while (begin <= bytes.size()) {
    const size_t end = std::min(bytes.find('\0', begin), bytes.size());
    fields.push_back(bytes.substr(begin, end - begin));
    begin = end + 1;
  }
  return fields;
}

void check_tokenizes(const std::string& text) {
  for (int32_t id : tokenizer->encode(text, false, true)) {
    LS_CHECK(id >= 0 && id < tokenizer->vocab_size()) << "encode produced id " << id;
  }
}

void check_render(const ChatTemplate& chat, const std::vector<ChatMessage>& messages,
                  bool add_generation_prompt) {
  const std::string& system = chat.default_system_prompt();
  LS_CHECK(system.find_first_of("{}") == std::string::npos)
      << "default system prompt holds template syntax: " << system;
  const auto turn = [](std::string_view role, std::string_view content) {
    return "<|im_start|>" + std::string(role) + "\n" + std::string(content) + "<|im_end|>\n";
  };
  std::string expected;
  if (!messages.empty() && messages.front().role != "system" && !system.empty()) {
    expected += turn("system", system);
  }
  for (const ChatMessage& m : messages) expected += turn(m.role, m.content);
  if (add_generation_prompt) expected += "<|im_start|>assistant\n";
  const auto rendered = chat.render(messages, add_generation_prompt);
  LS_CHECK(rendered.ok()) << "ChatML refused a conversation: " << rendered.error().message;
  LS_CHECK(rendered.value() == expected) << "render() differs from the ChatML turns";
  check_tokenizes(rendered.value());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  auto file = GgufFile::open(lightserve::fuzzing::model_path_or_exit());
  LS_CHECK(file.ok()) << file.error().message;
  auto tok = Tokenizer::from_gguf(*file.value());
  LS_CHECK(tok.ok()) << tok.error().message;
  tokenizer = std::move(tok).value().release();
  auto chat = ChatTemplate::from_gguf(*file.value(), *tokenizer);
  LS_CHECK(chat.ok()) << chat.error().message;
  model_template = new ChatTemplate(std::move(chat).value());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::vector<std::string_view> fields =
      split_fields(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  const bool fuzzed_template = (flags & 1) != 0;
  const bool add_generation_prompt = (flags & 2) != 0;

  std::string_view template_text;
  if (fuzzed_template) {
    template_text = fields.front();
    fields.erase(fields.begin());
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    messages.push_back({std::string(fields[i]), std::string(fields[i + 1])});
  }

  if (!fuzzed_template) {
    check_render(*model_template, messages, add_generation_prompt);
    return 0;
  }
  const std::vector<uint8_t> bytes = gguf_with_template(template_text);
  auto file = GgufFile::parse(bytes, "fuzz.gguf");
  LS_CHECK(file.ok()) << "the one-key GGUF did not parse: " << file.error().message;
  auto chat = ChatTemplate::from_gguf(*file.value(), *tokenizer);
  const bool chatml = template_text.find("<|im_start|>") != std::string_view::npos &&
                      template_text.find("<|im_end|>") != std::string_view::npos;
  if (chatml) {
    LS_CHECK(chat.ok() && chat->format() == lightserve::model::ChatFormat::kChatML)
        << "a template with <|im_start|> and <|im_end|> was not taken as ChatML";
    check_render(chat.value(), messages, add_generation_prompt);
  } else if (chat.ok()) {
    LS_CHECK(chat->format() != lightserve::model::ChatFormat::kChatML)
        << "ChatML without its markers";
    const auto rendered = chat->render(messages, add_generation_prompt);
    if (rendered.ok()) {
      check_tokenizes(rendered.value());
    } else {
      LS_CHECK(!rendered.error().message.empty()) << "a refusal without a message";
    }
  } else {
    LS_CHECK(!chat.error().message.empty()) << "a refusal without a message";
  }
  return 0;
}
