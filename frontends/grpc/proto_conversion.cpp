#include "frontends/grpc/proto_conversion.h"

#include <algorithm>
#include <string>
#include <utility>

#include "frontends/common/error_mapping.h"

namespace lightserve::frontends::proto {
namespace {

std::vector<model::ChatMessage> to_chat(const v1::ChatMessages& chat) {
  std::vector<model::ChatMessage> messages;
  messages.reserve(static_cast<size_t>(chat.messages_size()));
  for (const auto& m : chat.messages()) messages.push_back({m.role(), m.content()});
  return messages;
}

template <typename Ids>
std::vector<WireInt> wire_ints(const Ids& ids) {
  std::vector<WireInt> out;
  out.reserve(static_cast<size_t>(ids.size()));
  for (const auto id : ids) out.push_back(WireInt::of(id));
  return out;
}

grpc::Status to_status(const scheduler::EngineError& error) {
  return {grpc_code(error.kind), error.message};
}

// StructuredOutput → the constraint; field names as the proto's, for messages.
Status read_structured_output(const v1::GenerateRequest& request, RequestFields& f) {
  if (!request.has_structured_output()) return Status::Ok();
  const v1::StructuredOutput& so = request.structured_output();
  using Kind = sampling::ConstraintSpec::Kind;
  sampling::ConstraintSpec spec;
  switch (so.kind_case()) {
    case v1::StructuredOutput::kJsonObject:
      if (!so.json_object()) return Error{"'structured_output.json_object' must be true when set"};
      spec = {Kind::kJsonObject, {}, {}, "structured_output.json_object"};
      break;
    case v1::StructuredOutput::kJsonSchema:
      spec = {Kind::kJsonSchema, so.json_schema(), {}, "structured_output.json_schema"};
      break;
    case v1::StructuredOutput::kRegex:
      spec = {Kind::kRegex, so.regex(), {}, "structured_output.regex"};
      break;
    case v1::StructuredOutput::kChoice:
      spec = {Kind::kChoice,
              {},
              {so.choice().choices().begin(), so.choice().choices().end()},
              "structured_output.choice"};
      break;
    case v1::StructuredOutput::kGrammar:
      spec = {Kind::kGrammar, so.grammar(), {}, "structured_output.grammar"};
      break;
    case v1::StructuredOutput::kStructuralTag:
      spec = {Kind::kStructuralTag, so.structural_tag(), {}, "structured_output.structural_tag"};
      break;
    case v1::StructuredOutput::KIND_NOT_SET:
      return Status::Ok();  // an empty message asks for nothing
  }
  if (spec.kind != Kind::kJsonObject && spec.kind != Kind::kChoice && spec.source.empty()) {
    return Error{"'" + spec.field + "' is empty"};
  }
  f.constraint = std::move(spec);
  return Status::Ok();
}

}  // namespace

Result<RequestFields> to_request_fields(const v1::GenerateRequest& request) {
  RequestFields f;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      f.prompt_text = request.text();
      f.prompt_field = "text";
      break;
    case v1::GenerateRequest::kTokenIds:
      f.prompt_ids = wire_ints(request.token_ids().ids());
      f.prompt_field = "token_ids.ids";
      break;
    case v1::GenerateRequest::kChat:
      f.messages = to_chat(request.chat());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return Error{"the prompt is missing: set one of text, token_ids or chat"};
  }
  if (!request.model().empty()) f.model = request.model();
  if (request.has_max_tokens()) f.max_tokens = WireInt::of(request.max_tokens());
  if (request.has_temperature()) f.temperature = request.temperature();
  if (request.has_top_p()) f.top_p = request.top_p();
  if (request.has_min_p()) f.min_p = request.min_p();
  if (request.has_top_k()) f.top_k = WireInt::of(request.top_k());
  if (request.has_repetition_penalty()) f.repetition_penalty = request.repetition_penalty();
  if (request.has_presence_penalty()) f.presence_penalty = request.presence_penalty();
  if (request.has_frequency_penalty()) f.frequency_penalty = request.frequency_penalty();
  if (request.has_seed()) f.seed = request.seed();
  for (const auto& [id, bias] : request.logit_bias())
    f.logit_bias.emplace_back(WireInt::of(id), bias);
  if (request.has_min_tokens()) f.min_tokens = WireInt::of(request.min_tokens());
  if (request.has_add_generation_prompt())
    f.add_generation_prompt = request.add_generation_prompt();
  f.stop.assign(request.stop().begin(), request.stop().end());
  f.stop_token_ids = wire_ints(request.stop_token_ids());
  f.ignore_eos = request.ignore_eos();
  if (request.has_logprobs()) f.logprobs = WireInt::of(request.logprobs());
  f.priority = WireInt::of(request.priority());
  // Parallel samples, echo, chat rendering.
  if (request.has_n()) f.n = WireInt::of(request.n());
  f.echo = request.echo();
  if (f.echo && request.has_logprobs()) {
    // Echo's text has no per-token form here: the prompt's logprobs have their own field.
    return Error{
        "'logprobs' with 'echo' is not supported over gRPC: ask for 'prompt_logprobs' (the "
        "prompt's logprobs in GenerateResponse.prompt_logprobs)"};
  }
  if (request.has_prompt_logprobs()) f.prompt_logprobs = WireInt::of(request.prompt_logprobs());
  f.continue_final_message = request.continue_final_message();
  for (const auto& [key, value] : request.chat_template_kwargs()) {
    f.chat_template_kwargs.emplace_back(key, value);
  }
  std::sort(f.chat_template_kwargs.begin(), f.chat_template_kwargs.end());  // a map's order varies
  switch (request.lighttransfer().mode()) {
    case v1::LIGHTTRANSFER_MODE_SERVER_DEFAULT:
      f.lighttransfer = serving::LightTransferOverride::kServerDefault;
      break;
    case v1::LIGHTTRANSFER_MODE_FULL:
      f.lighttransfer = serving::LightTransferOverride::kFull;
      break;
    case v1::LIGHTTRANSFER_MODE_STREAMING:
      f.lighttransfer = serving::LightTransferOverride::kStreaming;
      break;
    default:
      return Error{"'lighttransfer.mode' " + std::to_string(request.lighttransfer().mode()) +
                   " is not a LightTransferMode (0 server default, 1 full, 2 streaming)"};
  }
  if (Status s = read_structured_output(request, f); !s.ok()) return Error{s.message()};
  return f;
}

Result<serving::GenerateInput> to_generate_input(const v1::GenerateRequest& request,
                                                 const TranslationContext& context) {
  Result<RequestFields> fields = to_request_fields(request);
  if (!fields) return fields.error();
  return translate(fields.value(), context);
}

Result<serving::GenerateInput> to_tokenize_input(const v1::TokenizeRequest& request) {
  serving::GenerateInput input;
  switch (request.input_case()) {
    case v1::TokenizeRequest::kText:
      input.prompt_text = request.text();
      break;
    case v1::TokenizeRequest::kChat: {
      std::vector<model::ChatMessage> messages = to_chat(request.chat());
      if (Status s = check_messages(messages); !s.ok()) return Error{s.message()};
      input.messages = std::move(messages);
      break;
    }
    case v1::TokenizeRequest::INPUT_NOT_SET:
      return Error{"the input is missing: set text or chat"};
  }
  if (request.has_add_generation_prompt()) {
    input.add_generation_prompt = request.add_generation_prompt();
  }
  input.continue_final_message = request.continue_final_message();
  for (const auto& [key, value] : request.chat_template_kwargs()) {
    input.chat_template_kwargs.emplace_back(key, value);
  }
  std::sort(input.chat_template_kwargs.begin(), input.chat_template_kwargs.end());
  if (!input.messages && (input.continue_final_message || !input.chat_template_kwargs.empty())) {
    return Error{std::string(input.continue_final_message ? "'continue_final_message'"
                                                          : "'chat_template_kwargs'") +
                 " needs chat messages"};
  }
  return input;
}

Result<std::vector<int32_t>> to_detokenize_ids(const v1::DetokenizeRequest& request,
                                               const TranslationContext& context) {
  return check_token_ids(wire_ints(request.token_ids()), "token_ids", context);
}

namespace {

void fill_position(const scheduler::TokenLogprobs& in, size_t max_top,
                   const model::Tokenizer& tokenizer, v1::PositionLogprobs* out) {
  out->set_logprob(in.logprob);
  out->set_rank(in.rank);
  for (size_t k = 0; k < in.top.size() && k < max_top; ++k) {
    v1::TokenLogprob* top = out->add_top();
    top->set_token_id(in.top[k].token_id);
    top->set_token(tokenizer.token_bytes(in.top[k].token_id, /*render_special=*/true));
    top->set_logprob(in.top[k].logprob);
  }
}

}  // namespace

void fill_token(const scheduler::RequestEvent& event, const model::Tokenizer& tokenizer,
                v1::GeneratedToken* token) {
  token->set_token_id(event.token_id);
  token->set_text(event.text);
  if (event.logprobs) {
    fill_position(*event.logprobs, event.logprobs->top.size(), tokenizer,
                  token->mutable_logprobs());
  }
}

void fill_prompt_logprobs(const std::vector<scheduler::TokenLogprobs>& logprobs,
                          std::span<const int32_t> prompt, int32_t top,
                          const model::Tokenizer& tokenizer,
                          google::protobuf::RepeatedPtrField<v1::PromptToken>* out) {
  if (prompt.empty() || logprobs.size() + 1 != prompt.size()) return;
  for (size_t t = 0; t < prompt.size(); ++t) {
    v1::PromptToken* token = out->Add();
    token->set_token_id(prompt[t]);
    token->set_token(tokenizer.token_bytes(prompt[t], /*render_special=*/true));
    if (t > 0) {
      fill_position(logprobs[t - 1], static_cast<size_t>(top), tokenizer,
                    token->mutable_logprobs());
    }
  }
}

void fill_finish(const scheduler::RequestEvent& event, v1::GenerateFinish* finish) {
  finish->set_text(event.text);
  finish->set_reason(event.finish_reason == scheduler::FinishReason::kLength
                         ? v1::FINISH_REASON_LENGTH
                         : v1::FINISH_REASON_STOP);
  if (event.token_id >= 0) finish->set_stop_token_id(event.token_id);
  const scheduler::RequestTimings& t = event.timings;
  v1::Usage* usage = finish->mutable_usage();
  usage->set_prompt_tokens(t.num_prompt_tokens);
  usage->set_completion_tokens(t.num_generated_tokens);
  usage->set_total_tokens(t.num_prompt_tokens + t.num_generated_tokens);
  v1::Timings* timings = finish->mutable_timings();
  timings->set_queue_seconds(t.queue_seconds);
  timings->set_time_to_first_token_seconds(t.time_to_first_token);
  timings->set_e2e_seconds(t.e2e_seconds);
  timings->set_num_preemptions(t.num_preemptions);
}

grpc::Status final_status(const scheduler::RequestEvent& finished, bool cancelled) {
  using scheduler::ErrorKind;
  if (cancelled) return {grpc::StatusCode::CANCELLED, "the call was cancelled"};
  switch (finished.finish_reason.value_or(scheduler::FinishReason::kError)) {
    case scheduler::FinishReason::kStop:
    case scheduler::FinishReason::kLength:
      return grpc::Status::OK;
    case scheduler::FinishReason::kAbort:
      return to_status(
          {ErrorKind::kUnavailable, "the request was aborted: the server is shutting down"});
    case scheduler::FinishReason::kError:
      break;
  }
  return to_status(finished.error.value_or(scheduler::EngineError{
      ErrorKind::kInternal, "the engine failed a step holding this request"}));
}

void fill_model_info(const serving::ModelInfo& info, bool has_chat_template,
                     v1::GetModelInfoResponse& out) {
  out.set_name(info.name);
  out.set_path(info.path);
  out.set_architecture(info.architecture);
  out.set_num_layers(info.num_layers);
  out.set_hidden_dim(info.hidden_dim);
  out.set_num_heads(info.num_heads);
  out.set_num_kv_heads(info.num_kv_heads);
  out.set_vocab_size(info.vocab_size);
  out.set_context_length(info.context_length);
  out.set_weight_bytes(info.weight_bytes);
  out.set_bos_token_id(info.bos_id);
  out.set_eos_token_id(info.eos_id);
  out.set_has_chat_template(has_chat_template);
}

}  // namespace lightserve::frontends::proto
