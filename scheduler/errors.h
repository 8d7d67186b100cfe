// Error kinds of the engine's request path (docs/design.md §9). The kind is decided here, once; the
// server maps it to an HTTP status and a gRPC code in one place.
#pragma once

#include <cstdint>
#include <string>

namespace lightserve::scheduler {

enum class ErrorKind : uint8_t {
  kInvalidArgument,    // 400 / INVALID_ARGUMENT: empty prompt, bad range, unknown token id
  kOutOfRange,         // 400 / OUT_OF_RANGE: prompt + max_tokens over the context or the arena
  kResourceExhausted,  // 429 / RESOURCE_EXHAUSTED: the waiting queue is full
  kUnavailable,        // 503 / UNAVAILABLE: the engine is stopping
  kInternal,           // 500 / INTERNAL: the executor failed a step
  kUnauthenticated,    // 401 / UNAUTHENTICATED: a missing or wrong API key (frontends only)
  kNotFound,           // 404 / NOT_FOUND: a model this server does not serve (frontends only)
};

const char* to_string(ErrorKind kind);

struct EngineError {
  ErrorKind kind = ErrorKind::kInternal;
  std::string message;
};

}  // namespace lightserve::scheduler
