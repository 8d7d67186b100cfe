#include "frontends/common/auth.h"

#include <cctype>

namespace lightserve::frontends {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool starts_with_bearer(std::string_view value) {
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(value[i])) != kScheme[i]) return false;
  }
  return true;
}

}  // namespace

bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

std::optional<scheduler::EngineError> check_bearer(const std::vector<std::string_view>& values,
                                                   const std::string& api_key, const char* where) {
  using scheduler::ErrorKind;
  if (api_key.empty()) return std::nullopt;
  const std::string carrier = std::string("the authorization ") + where;
  if (values.empty()) {
    return scheduler::EngineError{ErrorKind::kUnauthenticated,
                                  "missing API key: send " + carrier + " 'Bearer <key>'"};
  }
  if (values.size() > 1) {
    return scheduler::EngineError{ErrorKind::kInvalidArgument,
                                  "more than one authorization " + std::string(where) + " (" +
                                      std::to_string(values.size()) + "): send one"};
  }
  const std::string_view value = trim(values.front());
  if (!starts_with_bearer(value)) {
    return scheduler::EngineError{ErrorKind::kUnauthenticated, carrier + " must be 'Bearer <key>'"};
  }
  if (!same_secret(trim(value.substr(7)), api_key)) {
    return scheduler::EngineError{ErrorKind::kUnauthenticated, "invalid API key"};
  }
  return std::nullopt;
}

}  // namespace lightserve::frontends
