// The API-key check of both frontends: `Authorization: Bearer KEY` over HTTP, metadata
// `authorization: Bearer KEY` over gRPC, parsed the same way (scheme case-insensitive, spaces
// around the value and the key trimmed, the key compared in constant time).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "scheduler/errors.h"

namespace lightserve::frontends {

// `values`: every authorization header (or metadata entry) the request carries, in order.
// nullopt when no key is configured or exactly one value carries the right key; otherwise
// kUnauthenticated (missing, wrong scheme, wrong key) or kInvalidArgument (more than one value:
// which one counts would be a guess). `where` names the carrier in messages: "header" or
// "metadata".
std::optional<scheduler::EngineError> check_bearer(const std::vector<std::string_view>& values,
                                                   const std::string& api_key, const char* where);

// Equal-time comparison: the key's bytes do not leak through the time a refusal takes.
bool same_secret(std::string_view a, std::string_view b);

}  // namespace lightserve::frontends
