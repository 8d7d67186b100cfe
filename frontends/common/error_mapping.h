// The one place that maps request-path error kinds (scheduler/errors.h, docs/design.md §9) to HTTP
// statuses with OpenAI error bodies, and to gRPC status codes.
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <string>
#include <string_view>

#include "scheduler/errors.h"

namespace lightserve::frontends {

struct HttpError {
  int status = 500;
  const char* type = "server_error";  // OpenAI "error.type"
};

HttpError http_error(scheduler::ErrorKind kind);
grpc::StatusCode grpc_code(scheduler::ErrorKind kind);

// {"error": {"message": ..., "type": ..., "param": null, "code": ...}} as OpenAI sends it; a 404
// for a model not served here (the message begins with kModelNotFoundPrefix) is OpenAI's
// {"message": ..., "type": "invalid_request_error", "param": "model", "code": "model_not_found"}.
inline constexpr std::string_view kModelNotFoundPrefix = "The model '";

// A request the frontends refuse before the engine sees it: kNotFound when `message` is
// check_model's (request_translation.h), else kInvalidArgument.
scheduler::EngineError refusal(std::string message);
std::string openai_error_body(const std::string& message, const char* type, int status);

}  // namespace lightserve::frontends
