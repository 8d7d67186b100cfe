// frontends/common/request_translation: the one place request values are checked and defaulted
// for both protocols (the parity with the wire formats is tests/frontends/parity_test.cpp).
#include "frontends/common/request_translation.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tests/support/shared_model.h"

namespace lightserve::frontends {
namespace {

using serving::GenerateInput;
using serving::LightTransferOverride;

const TranslationContext kContext{"tiny-model", 1000};

RequestFields text(std::string prompt) {
  RequestFields f;
  f.prompt_text = std::move(prompt);
  return f;
}

GenerateInput ok(const RequestFields& f) {
  Result<GenerateInput> input = translate(f, kContext);
  EXPECT_TRUE(input.ok()) << input.error().message;
  return input.ok() ? input.value() : GenerateInput{};
}

std::string error_of(const RequestFields& f) {
  Result<GenerateInput> input = translate(f, kContext);
  return input.ok() ? "(accepted)" : input.error().message;
}

TEST(WireInt, KeepsEveryValueAClientCanSend) {
  EXPECT_EQ(WireInt::of(std::numeric_limits<int64_t>::min()).str(), "-9223372036854775808");
  EXPECT_EQ(WireInt::of(std::numeric_limits<int64_t>::min()).get(),
            std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(
      WireInt::of(std::numeric_limits<int64_t>::min()).in(std::numeric_limits<int64_t>::min(), 0));
  const WireInt huge = WireInt::of_unsigned(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(huge.str(), "18446744073709551615");
  EXPECT_FALSE(huge.in(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  EXPECT_TRUE(WireInt::of(-1).in(-1, 5));
  EXPECT_FALSE(WireInt::of(-2).in(-1, 5));
  EXPECT_FALSE(WireInt::of(6).in(-1, 5));
  EXPECT_EQ(WireInt::of(-7).str(), "-7");
}

TEST(Translate, UnsetFieldsTakeTheOpenAiDefaults) {
  const GenerateInput a = ok(text("Hello"));
  EXPECT_EQ(*a.prompt_text, "Hello");
  EXPECT_FALSE(a.max_tokens.has_value());
  EXPECT_FLOAT_EQ(a.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(a.sampling.top_p, 1.0f);
  EXPECT_EQ(a.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(a.sampling.min_p, 0.0f);
  EXPECT_FLOAT_EQ(a.sampling.presence_penalty, 0.0f);
  EXPECT_FLOAT_EQ(a.sampling.frequency_penalty, 0.0f);
  EXPECT_FLOAT_EQ(a.sampling.repetition_penalty, 1.0f);
  EXPECT_EQ(a.logprobs, -1);
  EXPECT_EQ(a.priority, 0);
  EXPECT_FALSE(a.ignore_eos);
  EXPECT_EQ(a.lighttransfer, LightTransferOverride::kServerDefault);
  // No seed: a fresh one per request (two equal ones out of 2^64 would be a broken generator).
  EXPECT_NE(a.sampling.seed, ok(text("Hello")).sampling.seed);
}

TEST(Translate, EveryFieldIsCarried) {
  RequestFields f;
  f.model = "tiny-model";
  f.prompt_ids = std::vector<WireInt>{WireInt::of(1), WireInt::of(999)};
  f.max_tokens = WireInt::of(7);
  f.temperature = 0.5;
  f.top_p = 0.25;
  f.min_p = 0.1;
  f.top_k = WireInt::of(-1);  // off, as vLLM spells it
  f.presence_penalty = 1.5;
  f.frequency_penalty = -0.5;
  f.repetition_penalty = 1.1;
  f.seed = 42;
  f.stop = {"a", "b"};
  f.stop_token_ids = {WireInt::of(5)};
  f.ignore_eos = true;
  f.logprobs = WireInt::of(20);
  f.priority = WireInt::of(-3);
  f.lighttransfer = LightTransferOverride::kStreaming;
  const GenerateInput in = ok(f);
  EXPECT_EQ(*in.prompt_ids, (std::vector<int32_t>{1, 999}));
  EXPECT_EQ(*in.max_tokens, 7);
  EXPECT_FLOAT_EQ(in.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(in.sampling.top_p, 0.25f);
  EXPECT_FLOAT_EQ(in.sampling.min_p, 0.1f);
  EXPECT_EQ(in.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(in.sampling.presence_penalty, 1.5f);
  EXPECT_FLOAT_EQ(in.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(in.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(in.sampling.seed, 42u);
  EXPECT_EQ(in.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(in.stop_token_ids, (std::vector<int32_t>{5}));
  EXPECT_TRUE(in.ignore_eos);
  EXPECT_EQ(in.logprobs, 20);
  EXPECT_EQ(in.priority, -3);
  EXPECT_EQ(in.lighttransfer, LightTransferOverride::kStreaming);
}

TEST(Translate, ChatRolesAreCheckedAndDeveloperIsSystem) {
  RequestFields f;
  f.messages = std::vector<model::ChatMessage>{{"developer", "Be brief."}, {"user", "Hi"}};
  const GenerateInput in = ok(f);
  EXPECT_EQ(in.messages->at(0).role, "system");
  EXPECT_EQ(in.messages->at(1).role, "user");
  f.messages->at(1).role = "wizard";
  EXPECT_EQ(error_of(f), "'messages[1].role' must be one of system, user, assistant, got 'wizard'");
  f.messages->clear();
  EXPECT_EQ(error_of(f), "'messages' is empty");
}

TEST(Translate, RefusalsNameTheFieldAndTheBoundCrossed) {
  struct Case {
    void (*edit)(RequestFields&);
    const char* message;
  };
  const Case cases[] = {
      {[](RequestFields& f) { f.prompt_text.reset(); }, "the prompt is missing"},
      {[](RequestFields& f) { f.messages.emplace(); }, "give exactly one of"},
      {[](RequestFields& f) { f.prompt_text = ""; },
       "'prompt' is empty: the prompt needs at least a token"},
      {[](RequestFields& f) {
         f.prompt_text.reset();
         f.prompt_ids.emplace();
       },
       "'prompt' is empty"},
      {[](RequestFields& f) {
         f.prompt_text.reset();
         f.prompt_ids = std::vector<WireInt>{WireInt::of(3), WireInt::of(1000)};
       },
       "'prompt[1]' = 1000 is not a token id (the vocabulary has 1000 tokens)"},
      {[](RequestFields& f) {
         f.prompt_text.reset();
         f.prompt_ids = std::vector<WireInt>{WireInt::of_unsigned(18446744073709551615u)};
       },
       "'prompt[0]' = 18446744073709551615 is not a token id"},
      {[](RequestFields& f) { f.model = "gpt-4"; },
       "The model 'gpt-4' does not exist: this server serves 'tiny-model'"},
      {[](RequestFields& f) { f.max_tokens = WireInt::of(0); }, "'max_tokens' must be ≥ 1, got 0"},
      {[](RequestFields& f) { f.max_tokens = WireInt::of(2147483648); },
       "'max_tokens' must be in [1, 2147483647], got 2147483648"},
      {[](RequestFields& f) { f.temperature = 2.5; }, "'temperature' must be in [0, 2], got 2.5"},
      {[](RequestFields& f) { f.temperature = std::numeric_limits<double>::quiet_NaN(); },
       "'temperature' must be in [0, 2]"},
      {[](RequestFields& f) { f.top_p = 0; }, "'top_p' must be in (0, 1], got 0"},
      {[](RequestFields& f) { f.min_p = -0.5; }, "'min_p' must be in [0, 1], got -0.5"},
      {[](RequestFields& f) { f.top_k = WireInt::of(-2); }, "'top_k' must be ≥ -1, got -2"},
      {[](RequestFields& f) { f.top_k = WireInt::of(2147483648); },
       "'top_k' must be in [-1, 2147483647], got 2147483648"},
      {[](RequestFields& f) { f.presence_penalty = 3; },
       "'presence_penalty' must be in [-2, 2], got 3"},
      {[](RequestFields& f) { f.frequency_penalty = -2.5; },
       "'frequency_penalty' must be in [-2, 2], got -2.5"},
      {[](RequestFields& f) { f.repetition_penalty = 0; },
       "'repetition_penalty' must be in (0, 10], got 0"},
      {[](RequestFields& f) {
         f.stop = {"a", "b", "c", "d", "e"};
       },
       "'stop' may hold at most 4 strings, got 5"},
      {[](RequestFields& f) {
         f.stop = {"a", ""};
       },
       "'stop[1]' is empty"},
      {[](RequestFields& f) { f.stop_token_ids = {WireInt::of(-1)}; },
       "'stop_token_ids[0]' = -1 is not a token id"},
      {[](RequestFields& f) { f.logprobs = WireInt::of(21); },
       "'logprobs' must be in [0, 20], got 21"},
      {[](RequestFields& f) {
         f.logprobs = WireInt::of(-1);
         f.logprobs_field = "top_logprobs";
       },
       "'top_logprobs' must be in [0, 20], got -1"},
      {[](RequestFields& f) { f.priority = WireInt::of(2147483648); },
       "'priority' must be ≤ 2147483647, got 2147483648"},
      {[](RequestFields& f) { f.priority = WireInt::of(-2147483649); },
       "'priority' must be ≥ -2147483648, got -2147483649"},
  };
  for (const Case& c : cases) {
    RequestFields f = text("x");
    c.edit(f);
    const std::string message = error_of(f);
    EXPECT_NE(message.find(c.message), std::string::npos)
        << "message: " << message << "\n  expected to contain: " << c.message;
  }
}

TEST(RequestTag, KeepsAUsableClientIdElseMakesOne) {
  EXPECT_EQ(request_tag("abc-123_x.y:z"), "abc-123_x.y:z");
  for (const std::string& bad : {std::string(), std::string("has space"), std::string("quote\""),
                                 std::string(129, 'a'), std::string("\x01")}) {
    const std::string tag = request_tag(bad);
    EXPECT_EQ(tag.rfind("req-", 0), 0u) << tag;
    EXPECT_EQ(tag.size(), 20u);
  }
  EXPECT_NE(request_tag(""), request_tag(""));
}

TEST(Translate, ModelAndTokenIdChecksOnTheirOwn) {
  EXPECT_TRUE(check_model(std::nullopt, kContext).ok());
  EXPECT_TRUE(check_model(std::string(), kContext).ok());
  EXPECT_TRUE(check_model(std::string("tiny-model"), kContext).ok());
  EXPECT_FALSE(check_model(std::string("other"), kContext).ok());
  Result<std::vector<int32_t>> ids =
      check_token_ids({WireInt::of(0), WireInt::of(999)}, "tokens", kContext);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids.value(), (std::vector<int32_t>{0, 999}));
  ids = check_token_ids({WireInt::of(0), WireInt::of(-4)}, "tokens", kContext);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.error().message,
            "'tokens[1]' = -4 is not a token id (the vocabulary has 1000 tokens)");
}

}  // namespace
}  // namespace lightserve::frontends

namespace lightserve::frontends {
namespace {

TEST(Detokenize, ReplacesCutCharactersAndRendersControlTokensOnlyWhenAsked) {
  const model::LlamaModel* llama = model::testing::shared_model();
  if (llama == nullptr) GTEST_SKIP() << "default model absent";
  const model::Tokenizer& tok = llama->tokenizer();
  const std::string clef = "\xF0\x9D\x84\x9E";  // U+1D11E, four bytes
  const std::vector<int32_t> ids = tok.encode(clef, false);
  ASSERT_GE(ids.size(), 2u) << "expected the character to span byte tokens";
  EXPECT_EQ(detokenize(tok, ids, false), clef);
  EXPECT_EQ(detokenize(tok, {ids[0]}, false), "\xEF\xBF\xBD");  // a cut character: U+FFFD
  const int32_t eos = tok.eos_id();
  EXPECT_EQ(detokenize(tok, {eos}, false), "");
  EXPECT_EQ(detokenize(tok, {eos}, true), tok.token_bytes(eos, true));
  EXPECT_FALSE(detokenize(tok, {eos}, true).empty());
}

}  // namespace
}  // namespace lightserve::frontends
