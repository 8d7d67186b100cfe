// lightserve.v1 messages <-> the serving core's types (docs/design.md §7): pure functions, no
// server, no engine, unit-tested on their own (tests/frontends/grpc/proto_conversion_test.cpp).
//
// Requests go through the translation both frontends share (frontends/common/
// request_translation.h): the proto's presence bits become RequestFields, so unset fields take
// the same OpenAI defaults and every value gets the same check and message as over HTTP.
#pragma once

#include <grpcpp/support/status.h>

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "frontends/common/request_translation.h"
#include "lightserve/v1/generation.pb.h"
#include "model/tokenizer.h"
#include "scheduler/events.h"
#include "serving/serving_core.h"

namespace lightserve::frontends::proto {

namespace v1 = ::lightserve::v1;

// GenerateRequest -> the core's input; errors are invalid arguments naming the field.
Result<serving::GenerateInput> to_generate_input(const v1::GenerateRequest& request,
                                                 const TranslationContext& context);
// The fields alone, before translate() (what the tests compare with the HTTP side).
Result<RequestFields> to_request_fields(const v1::GenerateRequest& request);

// TokenizeRequest -> the input ServingCore::tokenize takes (text or checked chat messages).
Result<serving::GenerateInput> to_tokenize_input(const v1::TokenizeRequest& request);
// DetokenizeRequest's ids, checked against the vocabulary.
Result<std::vector<int32_t>> to_detokenize_ids(const v1::DetokenizeRequest& request,
                                               const TranslationContext& context);

// A kToken event -> GeneratedToken (alternatives named by their bytes, control tokens rendered).
void fill_token(const scheduler::RequestEvent& event, const model::Tokenizer& tokenizer,
                v1::GeneratedToken* token);
// The prompt's logprobs of a request's first event (RequestEvent::prompt_logprobs, one per
// prompt token after the first) -> one PromptToken per token of `prompt`, the first without
// logprobs, each with at most `top` alternatives. Nothing when the sizes do not match.
void fill_prompt_logprobs(const std::vector<scheduler::TokenLogprobs>& logprobs,
                          std::span<const int32_t> prompt, int32_t top,
                          const model::Tokenizer& tokenizer,
                          google::protobuf::RepeatedPtrField<v1::PromptToken>* out);
// A kFinished event with reason stop or length -> GenerateFinish (text, reason, usage, timings).
void fill_finish(const scheduler::RequestEvent& event, v1::GenerateFinish* finish);
// The call's status once the engine finished the request: OK for stop and length, CANCELLED
// when the client cancelled, UNAVAILABLE for a shutdown's abort, the engine's error otherwise.
grpc::Status final_status(const scheduler::RequestEvent& finished, bool cancelled);

void fill_model_info(const serving::ModelInfo& info, bool has_chat_template,
                     v1::GetModelInfoResponse& out);

}  // namespace lightserve::frontends::proto
