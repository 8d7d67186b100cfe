// Chat formats against the real templates: tests/golden/chat_templates.json holds what each
// family's Jinja template (tests/golden/chat_templates/*.jinja: ChatML, Llama-3, Llama-3.1,
// Mistral v1, Llama-2 chat) renders through jinja2 for a set of conversations, or that it refuses
// them (scripts/goldens/chat_template_goldens.py). ChatTemplate, given the same template text,
// must render exactly the same text and refuse the same conversations.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace lightserve::model {
namespace {

using json = nlohmann::json;

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::string golden_dir() {
  return std::string(LIGHTSERVE_GOLDEN_DIR);
}

// A vocabulary whose BOS / EOS texts are the family's (as the golden script passes them).
std::unique_ptr<Tokenizer> vocabulary(const std::string& bos, const std::string& eos) {
  TokenizerSpec spec;
  spec.model = "llama";
  spec.tokens = {"<unk>", "x"};
  spec.token_types = {2, 1};
  if (!bos.empty()) {
    spec.bos_id = static_cast<int32_t>(spec.tokens.size());
    spec.tokens.push_back(bos);
    spec.token_types.push_back(3);
  }
  spec.eos_id = static_cast<int32_t>(spec.tokens.size());
  spec.tokens.push_back(eos);
  spec.token_types.push_back(3);
  auto tok = Tokenizer::from_spec(std::move(spec));
  EXPECT_TRUE(tok.ok()) << tok.error().message;
  return tok.ok() ? std::move(tok).value() : nullptr;
}

const std::map<std::string, std::pair<std::string, std::string>> kTokens = {
    {"llama3.jinja", {"<|begin_of_text|>", "<|eot_id|>"}},
    {"llama3.1.jinja", {"<|begin_of_text|>", "<|eot_id|>"}},
    {"mistral-v1.jinja", {"<s>", "</s>"}},
    {"llama2.jinja", {"<s>", "</s>"}},
    {"chatml.jinja", {"", "<|im_end|>"}},
};

TEST(ChatTemplateGolden, RendersAsTheJinjaTemplates) {
  const json golden = json::parse(read(golden_dir() + "/chat_templates.json"));
  const std::map<std::string, std::string> expected_names = {
      {"llama3.jinja", "llama3"},         {"llama3.1.jinja", "llama3.1"},
      {"mistral-v1.jinja", "mistral-v1"}, {"llama2.jinja", "llama2"},
      {"chatml.jinja", "chatml"},
  };
  size_t rendered = 0, refused = 0;
  for (const json& c : golden.at("cases")) {
    const std::string name = c.at("template");
    const auto& [bos, eos] = kTokens.at(name);
    const auto tok = vocabulary(bos, eos);
    ASSERT_NE(tok, nullptr);
    auto chat = ChatTemplate::from_text(read(golden_dir() + "/chat_templates/" + name), *tok);
    ASSERT_TRUE(chat.ok()) << name << ": " << chat.error().message;
    EXPECT_EQ(chat->name(), expected_names.at(name));
    std::vector<ChatMessage> messages;
    for (const json& m : c.at("messages")) messages.push_back({m.at("role"), m.at("content")});
    auto out = chat->render(messages, c.at("add_generation_prompt").get<bool>());
    if (c.contains("error")) {
      EXPECT_FALSE(out.ok()) << name << " accepted what the template refuses: " << c.dump();
      ++refused;
    } else {
      ASSERT_TRUE(out.ok()) << name << ": " << out.error().message << "\n" << c.dump();
      EXPECT_EQ(out.value(), c.at("output").get<std::string>()) << name << "\n" << c.dump();
      ++rendered;
    }
  }
  EXPECT_GE(rendered, 70u);
  EXPECT_GE(refused, 8u);
}

TEST(ChatTemplateGolden, NamesAndFilesResolveAndUnknownOnesAreRefused) {
  const auto tok = vocabulary("<s>", "</s>");
  for (const char* name : {"chatml", "llama3", "llama3.1", "mistral-v1", "llama2"}) {
    auto arg = ChatTemplate::read_argument(name);
    ASSERT_TRUE(arg.ok()) << name;
    EXPECT_EQ(arg.value(), name);
    auto chat = ChatTemplate::from_text(arg.value(), *tok);
    ASSERT_TRUE(chat.ok()) << name;
    EXPECT_EQ(chat->name(), name);
  }
  auto file = ChatTemplate::read_argument(golden_dir() + "/chat_templates/llama3.1.jinja");
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ(ChatTemplate::from_text(file.value(), *tok)->name(), "llama3.1");

  auto unknown = ChatTemplate::read_argument("vicuna");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("neither a chat format"), std::string::npos);
  // A Mistral "v3" template ([INST] without the v1 spaces) is not guessed at.
  auto v3 = ChatTemplate::from_text("{{ '[INST]' + message['content'] + '[/INST]' }}", *tok);
  ASSERT_FALSE(v3.ok());
  EXPECT_NE(v3.error().message.find("give one of those names with --chat-template"),
            std::string::npos);
}

// continue_final_message: the conversation as rendered without a generation prompt, less the
// final assistant turn's closing text, so the text ends with that message's content.
TEST(ChatTemplateOptions, ContinueFinalMessageLeavesTheLastTurnOpen) {
  const std::vector<ChatMessage> messages = {{"user", "Complete it."}, {"assistant", "The sky is"}};
  const std::map<std::string, std::string> closes = {{"chatml", "<|im_end|>\n"},
                                                     {"llama3", "<|eot_id|>"},
                                                     {"llama3.1", "<|eot_id|>"},
                                                     {"mistral-v1", "</s>"},
                                                     {"llama2", " </s>"}};
  for (const auto& [name, close] : closes) {
    const auto& [bos, eos] = kTokens.at(name + ".jinja");
    const auto tok = vocabulary(bos, eos);
    auto chat = ChatTemplate::from_text(name, *tok);
    ASSERT_TRUE(chat.ok()) << name;
    const auto closed = chat->render(messages, false);
    const auto open = chat->render(messages, ChatOptions{false, true, {}});
    ASSERT_TRUE(closed.ok() && open.ok()) << name;
    EXPECT_EQ(open.value() + close, closed.value()) << name;
    EXPECT_TRUE(open.value().ends_with("The sky is")) << name;
    // Both options at once, or a final message that is not the assistant's, are refused.
    auto both = chat->render(messages, ChatOptions{true, true, {}});
    ASSERT_FALSE(both.ok());
    EXPECT_NE(both.error().message.find("'add_generation_prompt': false"), std::string::npos);
    auto user_last = chat->render(std::span(messages).first(1), ChatOptions{false, true, {}});
    ASSERT_FALSE(user_last.ok());
    EXPECT_NE(user_last.error().message.find("the assistant's"), std::string::npos);
  }
}

// chat_template_kwargs: Llama-3.1 reads date_string; a name a format does not read is refused.
TEST(ChatTemplateOptions, KwargsTheFormatReadsAndRefusesTheRest) {
  const auto tok = vocabulary("<|begin_of_text|>", "<|eot_id|>");
  auto llama31 = ChatTemplate::from_text("llama3.1", *tok);
  ASSERT_TRUE(llama31.ok());
  const std::vector<ChatMessage> messages = {{"user", "Hi"}};
  const auto dated =
      llama31->render(messages, ChatOptions{true, false, {{"date_string", "1 Jan 2025"}}});
  ASSERT_TRUE(dated.ok());
  EXPECT_NE(dated.value().find("Today Date: 1 Jan 2025\n"), std::string::npos);
  std::string expected = llama31->render(messages, true).value();
  expected.replace(expected.find("26 Jul 2024"), 11, "1 Jan 2025");
  EXPECT_EQ(dated.value(), expected);
  auto unknown = llama31->render(messages, ChatOptions{true, false, {{"tools_in_user", "x"}}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("'chat_template_kwargs.tools_in_user'"),
            std::string::npos);
  EXPECT_NE(unknown.error().message.find("it reads date_string"), std::string::npos);
  auto chatml = ChatTemplate::from_text("chatml", *tok);
  auto thinking =
      chatml->render(messages, ChatOptions{true, false, {{"enable_thinking", "false"}}});
  ASSERT_FALSE(thinking.ok());
  EXPECT_NE(thinking.error().message.find("(chatml; it reads none)"), std::string::npos);
}

}  // namespace
}  // namespace lightserve::model
