// libFuzzer target for the gRPC frontend's request conversion (frontends/grpc/proto_conversion.h)
// on the wire bytes a client can send. Input: one byte choosing the message (0 GenerateRequest,
// 1 TokenizeRequest, 2 DetokenizeRequest), then its protobuf encoding, parsed with ParseFromArray
// as the server's deserializer does. A message that parses goes through to_generate_input (and so
// the translation both frontends share, frontends/common/request_translation.h),
// to_tokenize_input or to_detokenize_ids, against the default model's served id and vocabulary
// (no model loaded). What must hold: no exception escapes and no crash or UB; an Error carries a
// message; an accepted GenerateRequest is one the engine may be handed (fuzz_support.h
// check_accepted_generate_input: one prompt form, ids in the vocabulary, max_tokens unset or
// >= 1, logprobs in [-1, 20], at most 4 stop strings, none empty, sampling values the sampler
// accepts), in the form the oneof set, with the message's values carried over unchanged; an
// accepted TokenizeRequest has exactly the oneof's form; accepted detokenize ids are the
// message's, all inside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "base/check.h"
#include "frontends/grpc/proto_conversion.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace convert = lightserve::frontends::proto;
namespace v1 = lightserve::v1;
using lightserve::frontends::TranslationContext;

// The default model's served id and vocabulary: the checks need no model loaded.
TranslationContext context() {
  TranslationContext c;
  c.model_name = "SmolLM2-135M-Instruct.Q4_1";
  c.vocab_size = 49152;
  return c;
}

template <typename Result>
bool accepted(const Result& result) {
  if (result.ok()) return true;
  LS_CHECK(!result.error().message.empty()) << "an error without a message";
  return false;
}

void check_generate(const v1::GenerateRequest& request, const TranslationContext& c) {
  const auto converted = convert::to_generate_input(request, c);
  if (!accepted(converted)) return;
  const auto& input = converted.value();
  lightserve::fuzzing::check_accepted_generate_input(input, c.vocab_size);
  // The oneof's form, its content as sent.
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      LS_CHECK(input.prompt_text && *input.prompt_text == request.text()) << "text changed";
      break;
    case v1::GenerateRequest::kTokenIds: {
      LS_CHECK(input.prompt_ids &&
               static_cast<int>(input.prompt_ids->size()) == request.token_ids().ids_size())
          << "token_ids changed";
      for (int i = 0; i < request.token_ids().ids_size(); ++i) {
        LS_CHECK((*input.prompt_ids)[i] == request.token_ids().ids(i)) << "token_ids changed";
      }
      break;
    }
    case v1::GenerateRequest::kChat: {
      LS_CHECK(input.messages &&
               static_cast<int>(input.messages->size()) == request.chat().messages_size())
          << "chat changed";
      for (int i = 0; i < request.chat().messages_size(); ++i) {
        LS_CHECK((*input.messages)[i].content == request.chat().messages(i).content())
            << "a message's content changed";
      }
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      LS_CHECK(false) << "a request without a prompt was accepted";
  }
  // Every other value as sent (the proto has the wire's own types, so nothing to round).
  LS_CHECK(request.model().empty() || request.model() == c.model_name) << "another model";
  LS_CHECK(input.max_tokens.has_value() == request.has_max_tokens() &&
           (!request.has_max_tokens() || *input.max_tokens == request.max_tokens()))
      << "max_tokens changed";
  if (request.has_temperature()) {
    LS_CHECK(input.sampling.temperature == request.temperature()) << "temperature changed";
  }
  if (request.has_seed()) LS_CHECK(input.sampling.seed == request.seed()) << "seed changed";
  LS_CHECK(input.logprobs == (request.has_logprobs() ? request.logprobs() : -1))
      << "logprobs changed";
  LS_CHECK(input.sampling.min_tokens == (request.has_min_tokens() ? request.min_tokens() : 0))
      << "min_tokens changed";
  LS_CHECK(static_cast<int>(input.stop.size()) == request.stop_size()) << "stop changed";
  for (int i = 0; i < request.stop_size(); ++i) {
    LS_CHECK(input.stop[static_cast<size_t>(i)] == request.stop(i)) << "stop changed";
  }
  LS_CHECK(static_cast<int>(input.stop_token_ids.size()) == request.stop_token_ids_size())
      << "stop_token_ids changed";
  LS_CHECK(input.sampling.logit_bias.size() == request.logit_bias().size()) << "logit_bias changed";
  LS_CHECK(input.priority == request.priority()) << "priority changed";
  LS_CHECK(input.ignore_eos == request.ignore_eos()) << "ignore_eos changed";
  LS_CHECK(input.add_generation_prompt ==
           (!request.has_add_generation_prompt() || request.add_generation_prompt()))
      << "add_generation_prompt changed";
  // Issue 16: n in range, echo only for a prompt without logprobs, kwargs only for chat.
  LS_CHECK(input.n == (request.has_n() ? request.n() : 1) && input.n >= 1 &&
           input.n <= lightserve::frontends::kMaxParallelSamples)
      << "n changed or out of range";
  LS_CHECK(input.echo == request.echo() && (!input.echo || (!input.messages && input.logprobs < 0)))
      << "echo accepted where it is refused";
  LS_CHECK(input.chat_template_kwargs.size() == request.chat_template_kwargs().size() &&
           (input.chat_template_kwargs.empty() || input.messages))
      << "chat_template_kwargs changed";
}

void check_tokenize(const v1::TokenizeRequest& request) {
  const auto converted = convert::to_tokenize_input(request);
  if (!accepted(converted)) return;
  const auto& input = converted.value();
  LS_CHECK(!input.prompt_ids) << "a tokenize input with ids";
  if (request.input_case() == v1::TokenizeRequest::kText) {
    LS_CHECK(input.prompt_text && *input.prompt_text == request.text() && !input.messages)
        << "text changed";
  } else {
    LS_CHECK(request.input_case() == v1::TokenizeRequest::kChat) << "no input was accepted";
    LS_CHECK(!input.prompt_text && input.messages && !input.messages->empty() &&
             static_cast<int>(input.messages->size()) == request.chat().messages_size())
        << "chat changed";
    for (const auto& m : *input.messages) {
      LS_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant")
          << "role '" << m.role << "' was accepted";
    }
  }
}

void check_detokenize(const v1::DetokenizeRequest& request, const TranslationContext& c) {
  const auto converted = convert::to_detokenize_ids(request, c);
  if (!accepted(converted)) return;
  const auto& ids = converted.value();
  LS_CHECK(static_cast<int>(ids.size()) == request.token_ids_size()) << "token_ids changed";
  for (size_t i = 0; i < ids.size(); ++i) {
    lightserve::fuzzing::check_token_id(ids[i], c.vocab_size, "detokenize");
    LS_CHECK(ids[i] == request.token_ids(static_cast<int>(i))) << "token_ids changed";
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const TranslationContext c = context();
  const uint8_t* wire = data + 1;
  const int wire_size = static_cast<int>(size - 1);
  try {
    switch (data[0] % 3) {
      case 0: {
        v1::GenerateRequest request;
        if (request.ParseFromArray(wire, wire_size)) check_generate(request, c);
        break;
      }
      case 1: {
        v1::TokenizeRequest request;
        if (request.ParseFromArray(wire, wire_size)) check_tokenize(request);
        break;
      }
      default: {
        v1::DetokenizeRequest request;
        if (request.ParseFromArray(wire, wire_size)) check_detokenize(request, c);
        break;
      }
    }
  } catch (const std::exception& e) {
    LS_CHECK(false) << "an exception escaped: " << e.what();
  }
  return 0;
}
