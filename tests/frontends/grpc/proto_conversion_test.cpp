// frontends/grpc/proto_conversion: lightserve.v1 messages <-> the core's types, without a server.
#include "frontends/grpc/proto_conversion.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/shared_model.h"

namespace lightserve::frontends::proto {
namespace {

using scheduler::ErrorKind;
using scheduler::FinishReason;
using scheduler::RequestEvent;
using serving::LightTransferOverride;

const TranslationContext kContext{"tiny-model", 1000};

TEST(ProtoConversion, UnsetFieldsStayUnsetForTheSharedDefaults) {
  v1::GenerateRequest request;
  request.set_text("Hi");
  Result<RequestFields> f = to_request_fields(request);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(*f.value().prompt_text, "Hi");
  EXPECT_STREQ(f.value().prompt_field, "text");
  EXPECT_FALSE(f.value().model || f.value().max_tokens || f.value().temperature ||
               f.value().top_p || f.value().min_p || f.value().top_k || f.value().seed ||
               f.value().logprobs || f.value().repetition_penalty || f.value().presence_penalty ||
               f.value().frequency_penalty);
  EXPECT_EQ(f.value().lighttransfer, LightTransferOverride::kServerDefault);

  Result<serving::GenerateInput> in = to_generate_input(request, kContext);
  ASSERT_TRUE(in.ok()) << in.error().message;
  EXPECT_FLOAT_EQ(in.value().sampling.temperature, 1.0f);  // OpenAI's default, not the CLI's
  EXPECT_EQ(in.value().logprobs, -1);
}

TEST(ProtoConversion, EveryGenerateFieldArrives) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->add_ids(4);
  r.mutable_token_ids()->add_ids(999);
  r.set_model("tiny-model");
  r.set_max_tokens(9);
  r.set_temperature(0.25f);
  r.set_top_k(5);
  r.set_top_p(0.5f);
  r.set_min_p(0.125f);
  r.set_seed(77);
  r.set_repetition_penalty(1.5f);
  r.set_presence_penalty(-1);
  r.set_frequency_penalty(0.5f);
  r.add_stop("END");
  r.add_stop_token_ids(7);
  r.set_ignore_eos(true);
  r.set_logprobs(3);
  r.set_priority(-2);
  r.mutable_lighttransfer()->set_mode(v1::LIGHTTRANSFER_MODE_FULL);
  Result<serving::GenerateInput> in = to_generate_input(r, kContext);
  ASSERT_TRUE(in.ok()) << in.error().message;
  const serving::GenerateInput& v = in.value();
  EXPECT_EQ(*v.prompt_ids, (std::vector<int32_t>{4, 999}));
  EXPECT_EQ(*v.max_tokens, 9);
  EXPECT_FLOAT_EQ(v.sampling.temperature, 0.25f);
  EXPECT_EQ(v.sampling.top_k, 5);
  EXPECT_FLOAT_EQ(v.sampling.top_p, 0.5f);
  EXPECT_FLOAT_EQ(v.sampling.min_p, 0.125f);
  EXPECT_EQ(v.sampling.seed, 77u);
  EXPECT_FLOAT_EQ(v.sampling.repetition_penalty, 1.5f);
  EXPECT_FLOAT_EQ(v.sampling.presence_penalty, -1.0f);
  EXPECT_FLOAT_EQ(v.sampling.frequency_penalty, 0.5f);
  EXPECT_EQ(v.stop, (std::vector<std::string>{"END"}));
  EXPECT_EQ(v.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_TRUE(v.ignore_eos);
  EXPECT_EQ(v.logprobs, 3);
  EXPECT_EQ(v.priority, -2);
  EXPECT_EQ(v.lighttransfer, LightTransferOverride::kFull);
}

TEST(ProtoConversion, WhatOnlyTheProtoDecidesIsRefusedHere) {
  v1::GenerateRequest none;
  Result<serving::GenerateInput> in = to_generate_input(none, kContext);
  ASSERT_FALSE(in.ok());
  EXPECT_EQ(in.error().message, "the prompt is missing: set one of text, token_ids or chat");

  v1::GenerateRequest mode;
  mode.set_text("x");
  mode.mutable_lighttransfer()->set_mode(static_cast<v1::LightTransferMode>(7));
  in = to_generate_input(mode, kContext);
  ASSERT_FALSE(in.ok());
  EXPECT_NE(in.error().message.find("'lighttransfer.mode' 7 is not a LightTransferMode"),
            std::string::npos);

  v1::GenerateRequest ids;
  ids.mutable_token_ids()->add_ids(1000);
  in = to_generate_input(ids, kContext);
  ASSERT_FALSE(in.ok());
  EXPECT_NE(in.error().message.find("'token_ids.ids[0]' = 1000 is not a token id"),
            std::string::npos);

  // Echo with logprobs: the prompt's logprobs have their own field (prompt_logprobs).
  v1::GenerateRequest echo;
  echo.set_text("x");
  echo.set_echo(true);
  echo.set_logprobs(1);
  in = to_generate_input(echo, kContext);
  ASSERT_FALSE(in.ok());
  EXPECT_NE(in.error().message.find("'logprobs' with 'echo' is not supported over gRPC"),
            std::string::npos);
  EXPECT_NE(in.error().message.find("'prompt_logprobs'"), std::string::npos);
  v1::GenerateRequest scored;
  scored.set_text("x");
  scored.set_prompt_logprobs(3);
  in = to_generate_input(scored, kContext);
  ASSERT_TRUE(in.ok()) << in.error().message;
  EXPECT_EQ(in.value().prompt_logprobs_field, 3);
  EXPECT_EQ(in.value().prompt_logprobs, 3);
  scored.set_prompt_logprobs(21);
  in = to_generate_input(scored, kContext);
  ASSERT_FALSE(in.ok());
  EXPECT_NE(in.error().message.find("'prompt_logprobs'"), std::string::npos) << in.error().message;
}

TEST(ProtoConversion, StructuredOutputBecomesTheConstraint) {
  using Kind = sampling::ConstraintSpec::Kind;
  v1::GenerateRequest request;
  request.set_text("Hi");
  request.mutable_structured_output();  // an empty message asks for nothing
  ASSERT_TRUE(to_request_fields(request).ok());
  EXPECT_FALSE(to_request_fields(request).value().constraint);

  request.mutable_structured_output()->set_json_schema(R"({"type": "object"})");
  Result<serving::GenerateInput> in = to_generate_input(request, kContext);
  ASSERT_TRUE(in.ok()) << in.error().message;
  ASSERT_TRUE(in.value().constraint);
  EXPECT_EQ(in.value().constraint->kind, Kind::kJsonSchema);
  EXPECT_EQ(in.value().constraint->source, R"({"type": "object"})");
  EXPECT_EQ(in.value().constraint->field, "structured_output.json_schema");

  auto* choice = request.mutable_structured_output()->mutable_choice();
  choice->add_choices("yes");
  choice->add_choices("no");
  Result<RequestFields> f = to_request_fields(request);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f.value().constraint->kind, Kind::kChoice);
  EXPECT_EQ(f.value().constraint->choices, (std::vector<std::string>{"yes", "no"}));

  request.mutable_structured_output()->set_regex("");
  ASSERT_FALSE(to_request_fields(request).ok());
  EXPECT_EQ(to_request_fields(request).error().message, "'structured_output.regex' is empty");
  request.mutable_structured_output()->set_json_object(false);
  ASSERT_FALSE(to_request_fields(request).ok());
  request.mutable_structured_output()->set_grammar("root ::= \"a\"");
  ASSERT_TRUE(to_request_fields(request).ok());
  EXPECT_EQ(to_request_fields(request).value().constraint->kind, Kind::kGrammar);
}

TEST(ProtoConversion, TokenizeAndDetokenizeInputs) {
  v1::TokenizeRequest text;
  text.set_text("Hello");
  Result<serving::GenerateInput> in = to_tokenize_input(text);
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(*in.value().prompt_text, "Hello");

  v1::TokenizeRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("developer");
  m->set_content("hi");
  in = to_tokenize_input(chat);
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in.value().messages->at(0).role, "system");
  m->set_role("robot");
  EXPECT_FALSE(to_tokenize_input(chat).ok());
  EXPECT_FALSE(to_tokenize_input(v1::TokenizeRequest{}).ok());

  v1::DetokenizeRequest d;
  d.add_token_ids(3);
  d.add_token_ids(-1);
  Result<std::vector<int32_t>> out = to_detokenize_ids(d, kContext);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.error().message,
            "'token_ids[1]' = -1 is not a token id (the vocabulary has 1000 tokens)");
  d.set_token_ids(1, 999);
  out = to_detokenize_ids(d, kContext);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out.value(), (std::vector<int32_t>{3, 999}));
}

RequestEvent finished(FinishReason reason) {
  RequestEvent e;
  e.kind = RequestEvent::Kind::kFinished;
  e.finish_reason = reason;
  e.text = "tail";
  e.timings.num_prompt_tokens = 5;
  e.timings.num_generated_tokens = 3;
  e.timings.queue_seconds = 0.25;
  e.timings.time_to_first_token = 0.5;
  e.timings.e2e_seconds = 1.5;
  e.timings.num_preemptions = 2;
  return e;
}

TEST(ProtoConversion, FinishCarriesReasonUsageAndTimings) {
  RequestEvent e = finished(FinishReason::kLength);
  v1::GenerateFinish finish;
  fill_finish(e, &finish);
  EXPECT_EQ(finish.text(), "tail");
  EXPECT_EQ(finish.reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_FALSE(finish.has_stop_token_id());
  EXPECT_EQ(finish.usage().prompt_tokens(), 5);
  EXPECT_EQ(finish.usage().completion_tokens(), 3);
  EXPECT_EQ(finish.usage().total_tokens(), 8);
  EXPECT_DOUBLE_EQ(finish.timings().queue_seconds(), 0.25);
  EXPECT_DOUBLE_EQ(finish.timings().time_to_first_token_seconds(), 0.5);
  EXPECT_DOUBLE_EQ(finish.timings().e2e_seconds(), 1.5);
  EXPECT_EQ(finish.timings().num_preemptions(), 2);

  e = finished(FinishReason::kStop);
  e.token_id = 2;
  finish.Clear();
  fill_finish(e, &finish);
  EXPECT_EQ(finish.reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(finish.stop_token_id(), 2);
}

TEST(ProtoConversion, FinalStatusPerFinish) {
  EXPECT_TRUE(final_status(finished(FinishReason::kStop), false).ok());
  EXPECT_TRUE(final_status(finished(FinishReason::kLength), false).ok());
  EXPECT_EQ(final_status(finished(FinishReason::kStop), true).error_code(),
            grpc::StatusCode::CANCELLED);
  EXPECT_EQ(final_status(finished(FinishReason::kAbort), false).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  RequestEvent failed = finished(FinishReason::kError);
  EXPECT_EQ(final_status(failed, false).error_code(), grpc::StatusCode::INTERNAL);
  failed.error = scheduler::EngineError{ErrorKind::kResourceExhausted, "no room"};
  const grpc::Status status = final_status(failed, false);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status.error_message(), "no room");
}

TEST(ProtoConversion, TokensNameTheirAlternativesByBytes) {
  const model::LlamaModel* llama = model::testing::shared_model();
  if (llama == nullptr) GTEST_SKIP() << "default model absent";
  const model::Tokenizer& tok = llama->tokenizer();
  RequestEvent e;
  e.kind = RequestEvent::Kind::kToken;
  e.token_id = 28;
  e.text = "=";
  e.logprobs = scheduler::TokenLogprobs{-0.5f, {{28, -0.5f}, {tok.eos_id(), -2.0f}}};
  v1::GeneratedToken token;
  fill_token(e, tok, &token);
  EXPECT_EQ(token.token_id(), 28);
  EXPECT_EQ(token.text(), "=");
  EXPECT_FLOAT_EQ(token.logprobs().logprob(), -0.5f);
  ASSERT_EQ(token.logprobs().top_size(), 2);
  EXPECT_EQ(token.logprobs().top(0).token(), tok.token_bytes(28, true));
  EXPECT_EQ(token.logprobs().top(1).token(), tok.token_bytes(tok.eos_id(), true));
  EXPECT_FLOAT_EQ(token.logprobs().top(1).logprob(), -2.0f);
}

TEST(ProtoConversion, ModelInfo) {
  serving::ModelInfo info;
  info.name = "m";
  info.num_layers = 30;
  info.vocab_size = 49152;
  info.eos_id = 2;
  v1::GetModelInfoResponse out;
  fill_model_info(info, true, out);
  EXPECT_EQ(out.name(), "m");
  EXPECT_EQ(out.num_layers(), 30);
  EXPECT_EQ(out.vocab_size(), 49152);
  EXPECT_EQ(out.eos_token_id(), 2);
  EXPECT_TRUE(out.has_chat_template());
}

}  // namespace
}  // namespace lightserve::frontends::proto
