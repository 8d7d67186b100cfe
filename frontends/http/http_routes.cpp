#include "frontends/http/http_routes.h"

#include <algorithm>
#include <boost/beast/http/field.hpp>
#include <cctype>
#include <chrono>
#include <string_view>

#include "frontends/common/auth.h"
#include "frontends/common/error_mapping.h"
#include "frontends/common/request_translation.h"

namespace lightserve::frontends {
namespace {

namespace http = boost::beast::http;
using scheduler::ErrorKind;

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// When the process started serving: the `created` of the model object.
const int64_t kStartSeconds = unix_seconds();

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<HttpReply> check_api_key(const HttpRequest& request, const std::string& key) {
  std::vector<std::string_view> values;
  const auto [first, last] = request.equal_range(http::field::authorization);
  for (auto it = first; it != last; ++it) values.push_back(it->value());
  auto error = check_bearer(values, key, "header");
  if (!error) return std::nullopt;
  HttpReply reply = engine_error_reply(*error);
  // RFC 6750: a 401 names the scheme it wants.
  if (reply.status == 401) reply.headers.emplace_back("WWW-Authenticate", "Bearer");
  return reply;
}

std::optional<HttpReply> check_json_content_type(const HttpRequest& request) {
  const auto it = request.find(http::field::content_type);
  const std::string_view type = it == request.end() ? std::string_view() : trim(it->value());
  const std::string_view media = trim(type.substr(0, type.find(';')));
  if (media.size() == 16 && iequals_prefix(media, "application/json")) return std::nullopt;
  // Appended piece by piece: GCC 12 reports a false -Wrestrict on "literal" + std::string&&.
  std::string message = "Content-Type must be application/json, got ";
  if (type.empty()) {
    message += "none";
  } else {
    message.append("'").append(type).append("'");
  }
  return error_reply(415, message);
}

constexpr std::string_view kRequestIdHeader = "x-request-id";

HttpReply json_reply(std::string body) {
  return HttpReply{200, "application/json", std::move(body), {}};
}

HttpOutcome generate(const HttpRequest& request, serving::ServingCore& engine,
                     openai::Endpoint endpoint) {
  auto parsed =
      openai::parse_generate_request(request.body(), endpoint, translation_context(engine));
  if (!parsed) return engine_error_reply(refusal(parsed.error().message));
  const serving::GenerateInput& input = parsed.value().input;
  scheduler::RequestParams params;
  if (auto error = engine.prepare(input, params)) return engine_error_reply(*error);
  params.request_tag = request_tag(request[kRequestIdHeader]);
  HttpGeneration g;
  g.request_tag = params.request_tag;
  auto group = GenerationGroup::submit(engine, params, input.n);
  if (auto* error = std::get_if<scheduler::EngineError>(&group)) return engine_error_reply(*error);
  g.events = std::get<std::shared_ptr<GenerationGroup>>(std::move(group));
  g.endpoint = endpoint;
  g.stream = parsed.value().stream;
  g.include_usage = parsed.value().include_usage;
  g.want_logprobs = input.logprobs >= 0;
  g.options.n = input.n;
  if (input.echo) g.options.echo = echo_text(input, engine.tokenizer());
  if (input.prompt_logprobs >= 0) g.options.echo_prompt_ids = params.prompt;
  if (input.echo && input.logprobs >= 0) g.options.echo_logprobs = input.logprobs;
  g.options.prompt_logprobs = input.prompt_logprobs_field;
  g.options.system_fingerprint = engine.system_fingerprint();
  g.options.tool_calls = parsed.value().tool_calls;
  return g;
}

HttpReply tokenize(const HttpRequest& request, serving::ServingCore& engine) {
  auto parsed = openai::parse_tokenize_request(request.body(), translation_context(engine));
  if (!parsed) return engine_error_reply(refusal(parsed.error().message));
  const openai::TokenizeRequest& r = parsed.value();
  serving::GenerateInput input;  // tokenized as a generation request's prompt is
  input.prompt_text = r.prompt;
  input.messages = r.messages;
  input.add_generation_prompt = r.add_generation_prompt;
  input.continue_final_message = r.continue_final_message;
  input.chat_template_kwargs = r.chat_template_kwargs;
  std::vector<int32_t> ids;
  if (auto error = engine.tokenize(input, ids, r.add_special_tokens)) {
    return engine_error_reply(*error);
  }
  const model::Tokenizer& tok = engine.tokenizer();
  const openai::TokenText token_strs = [&tok](int32_t id) { return tok.token_text(id); };
  return json_reply(openai::tokenize_response(ids, engine.context_tokens(),
                                              r.return_token_strs ? &token_strs : nullptr));
}

HttpReply detokenize(const HttpRequest& request, serving::ServingCore& engine) {
  auto ids = openai::parse_detokenize_request(request.body(), translation_context(engine));
  if (!ids) return engine_error_reply(refusal(ids.error().message));
  return json_reply(openai::detokenize_response(
      frontends::detokenize(engine.tokenizer(), ids.value(), /*render_special=*/true)));
}

HttpReply ready(const serving::ServingCore& engine) {
  if (engine.ready()) return json_reply(R"({"status":"ready"})");
  HttpReply reply =
      json_reply(engine.draining() ? R"({"status":"draining"})" : R"({"status":"not ready"})");
  reply.status = 503;
  return reply;
}

// The routes: path, method, whether the API key guards it, whether it takes a JSON body.
enum class Route : uint8_t {
  kCompletions,
  kChatCompletions,
  kModels,
  kModel,
  kTokenize,
  kDetokenize,
  kHealth,
  kReady,
  kMetrics,
};
struct RouteSpec {
  Route route;
  http::verb method;
  bool guarded;
};

std::optional<RouteSpec> find_route(std::string_view path) {
  if (path == "/v1/completions") return RouteSpec{Route::kCompletions, http::verb::post, true};
  if (path == "/v1/chat/completions") {
    return RouteSpec{Route::kChatCompletions, http::verb::post, true};
  }
  if (path == "/v1/models") return RouteSpec{Route::kModels, http::verb::get, true};
  if (path.starts_with("/v1/models/")) return RouteSpec{Route::kModel, http::verb::get, true};
  if (path == "/tokenize") return RouteSpec{Route::kTokenize, http::verb::post, true};
  if (path == "/detokenize") return RouteSpec{Route::kDetokenize, http::verb::post, true};
  if (path == "/health") return RouteSpec{Route::kHealth, http::verb::get, false};
  if (path == "/ready") return RouteSpec{Route::kReady, http::verb::get, false};
  if (path == "/metrics") return RouteSpec{Route::kMetrics, http::verb::get, false};
  return std::nullopt;
}

}  // namespace

HttpReply error_reply(int status, const std::string& message) {
  // Protocol-level refusals (404, 405, 408, 413, 415 ...) are the client's doing: OpenAI's
  // invalid-request type, the same as error_mapping gives invalid arguments.
  const char* type = status >= 500 ? http_error(ErrorKind::kUnavailable).type
                                   : http_error(ErrorKind::kInvalidArgument).type;
  return HttpReply{status, "application/json", openai_error_body(message, type, status), {}};
}

HttpReply engine_error_reply(const scheduler::EngineError& error) {
  const HttpError mapped = http_error(error.kind);
  HttpReply reply{mapped.status,
                  "application/json",
                  openai_error_body(error.message, mapped.type, mapped.status),
                  {}};
  // Queue full: tell clients when to come back rather than let them hammer us.
  if (mapped.status == 429) reply.headers.emplace_back("Retry-After", "1");
  return reply;
}

namespace {

// Whether `origin` is in the comma-separated `allowed` (exact match, as browsers send it), or
// `allowed` holds "*".
bool origin_allowed(std::string_view origin, std::string_view allowed) {
  while (!allowed.empty()) {
    const size_t comma = std::min(allowed.find(','), allowed.size());
    std::string_view item = allowed.substr(0, comma);
    allowed.remove_prefix(std::min(comma + 1, allowed.size()));
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item == "*" || item == origin) return true;
  }
  return false;
}

// The CORS headers of every answer to `request` (none without an allowed Origin).
HttpHeaders cors_headers(const HttpRequest& request, const std::string& allowed) {
  const std::string_view origin = request[http::field::origin];
  if (origin.empty() || !origin_allowed(origin, allowed)) return {};
  const bool any = origin_allowed("*", allowed);  // "*" is listed
  HttpHeaders headers = {{"Access-Control-Allow-Origin", any ? "*" : std::string(origin)},
                         {"Access-Control-Expose-Headers", "x-request-id, Retry-After"}};
  if (!any) headers.emplace_back("Vary", "Origin");
  return headers;
}

// OPTIONS: a CORS preflight, answered before authentication (browsers send no credentials).
HttpReply preflight(const HttpRequest& request, const RouteSpec& spec, HttpHeaders cors) {
  const bool granted = !cors.empty();  // a CORS request from an allowed origin
  HttpReply reply{204, "", "", std::move(cors)};
  const std::string methods = std::string(http::to_string(spec.method)) + ", OPTIONS";
  reply.headers.emplace_back("Allow", methods);
  if (!granted) return reply;
  reply.headers.emplace_back("Access-Control-Allow-Methods", methods);
  const std::string_view asked = request[http::field::access_control_request_headers];
  reply.headers.emplace_back(
      "Access-Control-Allow-Headers",
      asked.empty() ? "Authorization, Content-Type, x-request-id" : std::string(asked));
  reply.headers.emplace_back("Access-Control-Max-Age", "600");
  return reply;
}

// The route's answer: method (405), API key (401), Content-Type (415), then the handler.
HttpOutcome route_request(const HttpRequest& request, serving::ServingCore& engine,
                          std::string_view path, const RouteSpec& spec);

}  // namespace

HttpOutcome handle_http_request(const HttpRequest& request, serving::ServingCore& engine) {
  const std::string_view target = request.target();
  const std::string_view path = target.substr(0, target.find('?'));
  const std::optional<RouteSpec> spec = find_route(path);
  HttpHeaders cors = cors_headers(request, engine.config().cors_origins);
  HttpOutcome outcome;
  if (!spec) {
    outcome = error_reply(404, "no route for " + std::string(path));
  } else if (request.method() == http::verb::options) {
    return preflight(request, *spec, std::move(cors));
  } else {
    outcome = route_request(request, engine, path, *spec);
  }
  auto& headers = std::holds_alternative<HttpReply>(outcome)
                      ? std::get<HttpReply>(outcome).headers
                      : std::get<HttpGeneration>(outcome).headers;
  headers.insert(headers.end(), cors.begin(), cors.end());
  return outcome;
}

namespace {

HttpOutcome route_request(const HttpRequest& request, serving::ServingCore& engine,
                          std::string_view path, const RouteSpec& spec) {
  if (request.method() != spec.method) {
    HttpReply reply = error_reply(405, std::string(request.method_string()) +
                                           " is not allowed on " + std::string(path) + "; use " +
                                           std::string(http::to_string(spec.method)));
    reply.headers.emplace_back("Allow", std::string(http::to_string(spec.method)) + ", OPTIONS");
    return reply;
  }
  if (spec.guarded) {
    if (auto refused = check_api_key(request, engine.config().api_key)) return *refused;
  }
  if (spec.method == http::verb::post) {
    if (auto refused = check_json_content_type(request)) return *refused;
  }
  switch (spec.route) {
    case Route::kCompletions:
      return generate(request, engine, openai::Endpoint::kCompletions);
    case Route::kChatCompletions:
      return generate(request, engine, openai::Endpoint::kChatCompletions);
    case Route::kModels:
      return json_reply(
          openai::models_response(engine.model_info(), engine.context_tokens(), kStartSeconds));
    case Route::kModel: {
      const std::string_view id = path.substr(std::string_view("/v1/models/").size());
      if (Status s = check_model(std::string(id), translation_context(engine)); !s.ok()) {
        return engine_error_reply(refusal(s.message()));
      }
      return json_reply(
          openai::model_object(engine.model_info(), engine.context_tokens(), kStartSeconds));
    }
    case Route::kTokenize:
      return tokenize(request, engine);
    case Route::kDetokenize:
      return detokenize(request, engine);
    case Route::kHealth:
      if (!engine.healthy()) return error_reply(503, "unhealthy: the engine or its device failed");
      return json_reply(R"({"status":"ok"})");
    case Route::kReady:
      return ready(engine);
    case Route::kMetrics:
      return HttpReply{
          200, "text/plain; version=0.0.4; charset=utf-8", engine.render_metrics(), {}};
  }
  return error_reply(404, "no route for " + std::string(path));
}

}  // namespace
}  // namespace lightserve::frontends
