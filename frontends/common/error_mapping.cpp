#include "frontends/common/error_mapping.h"

#include <nlohmann/json.hpp>
#include <utility>

namespace lightserve::frontends {

using scheduler::ErrorKind;

HttpError http_error(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
    case ErrorKind::kOutOfRange:
      return {400, "invalid_request_error"};
    case ErrorKind::kResourceExhausted:
      return {429, "rate_limit_exceeded"};
    case ErrorKind::kUnavailable:
      return {503, "service_unavailable"};
    case ErrorKind::kUnauthenticated:
      return {401, "authentication_error"};
    case ErrorKind::kNotFound:
      return {404, "invalid_request_error"};  // OpenAI's type, with code "model_not_found"
    case ErrorKind::kInternal:
      return {500, "server_error"};
  }
  return {500, "server_error"};
}

grpc::StatusCode grpc_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case ErrorKind::kOutOfRange:
      return grpc::StatusCode::OUT_OF_RANGE;
    case ErrorKind::kResourceExhausted:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case ErrorKind::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
    case ErrorKind::kUnauthenticated:
      return grpc::StatusCode::UNAUTHENTICATED;
    case ErrorKind::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case ErrorKind::kInternal:
      return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::INTERNAL;
}

scheduler::EngineError refusal(std::string message) {
  const ErrorKind kind = std::string_view(message).starts_with(kModelNotFoundPrefix)
                             ? ErrorKind::kNotFound
                             : ErrorKind::kInvalidArgument;
  return {kind, std::move(message)};
}

std::string openai_error_body(const std::string& message, const char* type, int status) {
  nlohmann::json body;
  if (status == 404 && message.starts_with(kModelNotFoundPrefix)) {
    // OpenAI's unknown-model body: the code names the problem, param the field.
    body["error"] = {
        {"message", message}, {"type", type}, {"param", "model"}, {"code", "model_not_found"}};
  } else {
    body["error"] = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}};
  }
  // Replace invalid UTF-8 (a message may quote client bytes) rather than throw.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace lightserve::frontends
