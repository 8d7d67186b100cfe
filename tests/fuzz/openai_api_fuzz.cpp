// libFuzzer target for the OpenAI JSON translation of the HTTP frontend (frontends/http/
// openai_api.h): parse_generate_request (completions and chat), parse_tokenize_request and
// parse_detokenize_request on arbitrary bodies. Input: one byte choosing the function, then the
// body. What must hold: no exception escapes (they promise never to throw) and no crash or UB;
// an Error carries a message; an accepted request is one the engine may be handed
// (fuzz_support.h check_accepted_generate_input: exactly one prompt form, every token id inside
// the vocabulary, max_tokens unset or >= 1, logprobs in [-1, 20], at most 4 stop strings, none
// empty, sampling values SamplingParams::validate accepts), with messages for chat and never for
// completions; accepted detokenize ids are inside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/check.h"
#include "frontends/http/openai_api.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace openai = lightserve::frontends::openai;

// The default model's served id and vocabulary: the checks need no model loaded.
openai::ApiContext context() {
  openai::ApiContext c;
  c.model_name = "SmolLM2-135M-Instruct.Q4_1";
  c.vocab_size = 49152;
  return c;
}

void check_id(int32_t id, const openai::ApiContext& c, const char* what) {
  lightserve::fuzzing::check_token_id(id, c.vocab_size, what);
}

void check_generate(std::string_view body, openai::Endpoint endpoint, const openai::ApiContext& c) {
  const auto parsed = openai::parse_generate_request(body, endpoint, c);
  if (!parsed.ok()) {
    LS_CHECK(!parsed.error().message.empty()) << "an error without a message";
    return;
  }
  const auto& input = parsed.value().input;
  lightserve::fuzzing::check_accepted_generate_input(input, c.vocab_size);
  LS_CHECK(input.messages.has_value() == (endpoint == openai::Endpoint::kChatCompletions))
      << "messages on the wrong endpoint";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const openai::ApiContext c = context();
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      check_generate(body, openai::Endpoint::kCompletions, c);
      break;
    case 1:
      check_generate(body, openai::Endpoint::kChatCompletions, c);
      break;
    case 2: {
      const auto parsed = openai::parse_tokenize_request(body, c);
      if (parsed.ok()) {
        LS_CHECK(parsed.value().prompt.has_value() != parsed.value().messages.has_value())
            << "a tokenize request needs exactly one of prompt and messages";
      } else {
        LS_CHECK(!parsed.error().message.empty()) << "an error without a message";
      }
      break;
    }
    default: {
      const auto parsed = openai::parse_detokenize_request(body, c);
      if (parsed.ok()) {
        for (int32_t id : parsed.value()) check_id(id, c, "detokenize");
      } else {
        LS_CHECK(!parsed.error().message.empty()) << "an error without a message";
      }
      break;
    }
  }
  return 0;
}
