// The HTTP frontend against the real daemon (`lightserve serve` on an ephemeral port, started once
// for the suite): completions and chat, whole and streamed (SSE framing, [DONE], the usage chunk),
// /v1/models, /tokenize → /detokenize, the probes and /metrics, keep-alive, greedy text equal to
// `lightserve generate`, and a client that goes away mid-request being aborted (KV freed).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "model/lighttransfer.h"
#include "tests/support/cli_runner.h"
#include "tests/support/http_test_client.h"

namespace {

using lightserve::testing::DaemonSuite;
using lightserve::testing::HttpConnection;
using lightserve::testing::HttpResponse;
using lightserve::testing::metric_value;
using lightserve::testing::sse_data;
using json = nlohmann::json;

const std::string kModel = LIGHTSERVE_TEST_MODEL;
const std::string kModelName = "SmolLM2-135M-Instruct.Q4_1";  // the file name's stem
const std::vector<std::pair<std::string, std::string>> kJson = {
    {"Content-Type", "application/json"}};

class HttpServer : public DaemonSuite<HttpServer> {
 public:
  static std::vector<std::string> daemon_args() {
    return {"--model",        kModel,
            "--kv-budget",    "64MiB",
            "--context",      "1024",
            "--grpc-port",    "-1",
            "--max-running",  "4",
            "--request-log",  "json",
            "--cors-origins", "https://app.example, http://localhost:3000"};
  }

 protected:
  static HttpResponse post(const std::string& path, const json& body) {
    HttpConnection c(port());
    return c.request("POST", path, body.dump(), kJson);
  }
  static HttpResponse get(const std::string& path) {
    HttpConnection c(port());
    return c.request("GET", path);
  }

  // The text of a whole (non-streamed) response, failing the test on anything else.
  static std::string completion_text(const json& body) {
    const HttpResponse r = post("/v1/completions", body);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json()["choices"][0].value("text", "<missing>");
  }
  static std::string chat_text(const json& body) {
    const HttpResponse r = post("/v1/chat/completions", body);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json()["choices"][0]["message"].value("content", "<missing>");
  }
};

// `lightserve generate` greedy output (its trailing newline removed).
std::string generate_cli(const std::string& prompt, int max_tokens, bool chat) {
  const auto r = lightserve::testing::run_lightserve(
      "generate -q --model " + kModel + " --temperature 0 -n " + std::to_string(max_tokens) +
      (chat ? " --chat" : "") + " --prompt '" + prompt + "'");
  EXPECT_EQ(r.code, 0) << r.err;
  std::string out = r.out;
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

TEST_F(HttpServer, CompletionObject) {
  const HttpResponse r = post("/v1/completions", {{"model", kModelName},
                                                  {"prompt", "The capital of France is"},
                                                  {"max_tokens", 8},
                                                  {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  const json body = r.json();
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], kModelName);
  EXPECT_EQ(body["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_FALSE(body["choices"][0]["text"].get<std::string>().empty());
  const std::string finish = body["choices"][0]["finish_reason"];
  EXPECT_TRUE(finish == "stop" || finish == "length") << finish;
  EXPECT_GT(body["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_LE(body["usage"]["completion_tokens"].get<int>(), 8);
  EXPECT_EQ(
      body["usage"]["total_tokens"].get<int>(),
      body["usage"]["prompt_tokens"].get<int>() + body["usage"]["completion_tokens"].get<int>());
}

TEST_F(HttpServer, GreedyCompletionEqualsGenerate) {
  const std::string prompt = "The capital of France is";
  EXPECT_EQ(completion_text({{"prompt", prompt}, {"max_tokens", 24}, {"temperature", 0}}),
            generate_cli(prompt, 24, false));
}

TEST_F(HttpServer, GreedyChatEqualsGenerateChat) {
  const std::string prompt = "Write one sentence about the sea.";
  const json body = {{"messages", {{{"role", "user"}, {"content", prompt}}}},
                     {"max_tokens", 24},
                     {"temperature", 0}};
  const HttpResponse r = post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.json();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], generate_cli(prompt, 24, true));
}

TEST_F(HttpServer, StreamedCompletionIsFramedAndEndsWithDone) {
  const json request = {{"prompt", "Once upon a time"}, {"max_tokens", 12}, {"temperature", 0}};
  json streamed = request;
  streamed["stream"] = true;
  const HttpResponse r = post("/v1/completions", streamed);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  bool framing_ok = false;
  const std::vector<std::string> events = sse_data(r.body, &framing_ok);
  EXPECT_TRUE(framing_ok) << r.body;
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_FALSE(chunk.contains("usage"));
    text += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null())
      finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_TRUE(finish == "stop" || finish == "length");
  EXPECT_EQ(text, completion_text(request));
}

TEST_F(HttpServer, StreamedChatSendsRoleFirstAndAUsageChunk) {
  const json request = {{"messages", {{{"role", "user"}, {"content", "Say hello."}}}},
                        {"max_tokens", 12},
                        {"temperature", 0}};
  json streamed = request;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  const HttpResponse r = post("/v1/chat/completions", streamed);
  ASSERT_EQ(r.status, 200) << r.body;
  bool framing_ok = false;
  const std::vector<std::string> events = sse_data(r.body, &framing_ok);
  EXPECT_TRUE(framing_ok);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json first = json::parse(events.front());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_GT(usage["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_GT(usage["usage"]["completion_tokens"].get<int>(), 0);
  std::string text;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());
    text += chunk["choices"][0]["delta"].value("content", "");
  }
  EXPECT_EQ(text, chat_text(request));
}

TEST_F(HttpServer, LogprobsPenaltiesAndLightTransferOverride) {
  const HttpResponse r = post("/v1/completions", {{"prompt", "Hello"},
                                                  {"max_tokens", 4},
                                                  {"temperature", 0},
                                                  {"logprobs", 2},
                                                  {"presence_penalty", 0.5},
                                                  {"repetition_penalty", 1.2},
                                                  {"lighttransfer", {{"mode", "full"}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json lp = r.json()["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object()) << r.body;
  EXPECT_EQ(lp["tokens"].size(), lp["token_logprobs"].size());
  ASSERT_FALSE(lp["top_logprobs"].empty());
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_LE(lp["token_logprobs"][0].get<double>(), 0.0);
}

TEST_F(HttpServer, LogitBiasAndMinTokensReachTheSampler) {
  // Greedy: banning the first token's id makes the first token another one.
  const json greedy = {{"prompt", "The capital of France is"},
                       {"max_tokens", 1},
                       {"temperature", 0},
                       {"logprobs", 0}};
  const HttpResponse first = post("/tokenize", {{"prompt", "x"}});  // a live daemon, any answer
  ASSERT_EQ(first.status, 200);
  const HttpResponse plain = post("/v1/completions", greedy);
  ASSERT_EQ(plain.status, 200) << plain.body;
  const std::string text = plain.json()["choices"][0]["text"];
  const HttpResponse ids = post("/tokenize", {{"prompt", text}, {"add_special_tokens", false}});
  ASSERT_EQ(ids.status, 200);
  const int id = ids.json()["tokens"][0];
  json banned = greedy;
  banned["logit_bias"] = {{std::to_string(id), -100}};
  const HttpResponse other = post("/v1/completions", banned);
  ASSERT_EQ(other.status, 200) << other.body;
  EXPECT_NE(other.json()["choices"][0]["text"], text);

  // A chat answer that ends early runs to min_tokens when asked.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "What is 2+2?"}}}},
                     {"max_tokens", 128},
                     {"temperature", 0}};
  const HttpResponse short_answer = post("/v1/chat/completions", chat);
  ASSERT_EQ(short_answer.status, 200) << short_answer.body;
  ASSERT_EQ(short_answer.json()["choices"][0]["finish_reason"], "stop") << short_answer.body;
  const int natural = short_answer.json()["usage"]["completion_tokens"];
  json held = chat;
  held["min_tokens"] = natural + 8;
  held["max_tokens"] = natural + 8;
  const HttpResponse long_answer = post("/v1/chat/completions", held);
  ASSERT_EQ(long_answer.status, 200) << long_answer.body;
  EXPECT_EQ(long_answer.json()["usage"]["completion_tokens"], natural + 8);
  EXPECT_EQ(long_answer.json()["choices"][0]["finish_reason"], "length");
}

TEST_F(HttpServer, RequestIdsAreEchoedAndLoggedOneLinePerRequest) {
  const json body = {{"prompt", "Hello"}, {"max_tokens", 3}, {"temperature", 0}};
  const auto kJsonType = std::pair<std::string, std::string>{"Content-Type", "application/json"};
  const HttpResponse given = HttpConnection(port(), 60)
                                 .request("POST", "/v1/completions", body.dump(),
                                          {kJsonType, {"X-Request-Id", "client-42.a_b:c"}});
  ASSERT_EQ(given.status, 200) << given.body;
  EXPECT_EQ(given.header("x-request-id"), "client-42.a_b:c");
  json streamed = body;
  streamed["stream"] = true;
  const HttpResponse made = HttpConnection(port(), 60)
                                .request("POST", "/v1/completions", streamed.dump(),
                                         {kJsonType, {"X-Request-Id", "has space&quote\""}});
  ASSERT_EQ(made.status, 200) << made.body;
  const std::string tag = made.header("x-request-id");
  EXPECT_EQ(tag.rfind("req-", 0), 0u) << tag;  // unusable: one made instead
  EXPECT_EQ(tag.size(), 20u) << tag;
  // The daemon's stderr has one JSON line per finished request (server.request_log = json).
  std::optional<json> line;
  for (int i = 0; i < 100 && !line; ++i) {
    std::istringstream err(daemon_->stderr_text());
    for (std::string l; std::getline(err, l);) {
      const json j = json::parse(l, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.value("id", "") == "client-42.a_b:c") line = j;
    }
    if (!line) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(line.has_value()) << daemon_->stderr_text();
  EXPECT_EQ((*line)["event"], "request");
  EXPECT_EQ((*line)["output_tokens"], 3);
  EXPECT_EQ((*line)["prompt_tokens"], given.json()["usage"]["prompt_tokens"]);
  EXPECT_EQ((*line)["finish"], "length");
  // The default mode: online at the lazy fraction validated by the model's shipped plan
  // (docs/plans/smollm2-135m.yaml, serving/lighttransfer_options.h) of the model's 30 layers.
  auto plan = lightserve::model::LtPlan::load(std::string(LIGHTSERVE_SOURCE_DIR) +
                                              "/docs/plans/smollm2-135m.yaml");
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_EQ((*line)["lazy_layers"], std::lround(plan->validated_fraction * 30)) << line->dump();
  EXPECT_GE((*line)["e2e_s"].get<double>(), (*line)["ttft_s"].get<double>());
}

TEST_F(HttpServer, ModelsListsTheServedModel) {
  const HttpResponse r = get("/v1/models");
  ASSERT_EQ(r.status, 200);
  const json j = r.json();
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], kModelName);
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["max_model_len"], 1024);
  EXPECT_EQ(get("/v1/models/" + kModelName).json()["id"], kModelName);
  EXPECT_EQ(get("/v1/models/other").status, 404);
}

TEST_F(HttpServer, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Hello, world! Grüße aus Zürich 123 <|im_start|>";
  const HttpResponse t = post("/tokenize", {{"prompt", text}});
  ASSERT_EQ(t.status, 200) << t.body;
  const json tokens = t.json()["tokens"];
  EXPECT_EQ(t.json()["count"], tokens.size());
  EXPECT_GT(tokens.size(), 5u);
  const HttpResponse d = post("/detokenize", {{"tokens", tokens}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.json()["prompt"], text);

  const HttpResponse chat =
      post("/tokenize", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}});
  ASSERT_EQ(chat.status, 200) << chat.body;
  const HttpResponse rendered = post("/detokenize", {{"tokens", chat.json()["tokens"]}});
  EXPECT_NE(rendered.json()["prompt"].get<std::string>().find("<|im_start|>user\nHi<|im_end|>"),
            std::string::npos)
      << rendered.body;
}

TEST_F(HttpServer, ProbesAndMetrics) {
  EXPECT_EQ(get("/health").status, 200);
  const HttpResponse ready = get("/ready");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.json()["status"], "ready");
  const HttpResponse metrics = get("/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(metrics.body.find("lightserve_num_requests_running"), std::string::npos);
  EXPECT_TRUE(metric_value(metrics.body, "lightserve_kv_cache_usage_perc").has_value());
}

// CORS: an allowed Origin gets Access-Control-Allow-Origin on every answer (streamed, errors
// too); another origin gets none; OPTIONS is a preflight answered without the API key.
TEST_F(HttpServer, CorsHeadersForAllowedOriginsOnly) {
  const auto with_origin = [](const std::string& origin) {
    auto headers = kJson;
    headers.emplace_back("Origin", origin);
    return headers;
  };
  const std::string body = json{{"prompt", "Hi"}, {"max_tokens", 2}}.dump();
  const HttpResponse allowed = HttpConnection(port()).request("POST", "/v1/completions", body,
                                                              with_origin("https://app.example"));
  EXPECT_EQ(allowed.status, 200);
  EXPECT_EQ(allowed.header("access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(allowed.header("vary"), "Origin");
  EXPECT_NE(allowed.header("access-control-expose-headers").find("x-request-id"),
            std::string::npos);

  const HttpResponse other = HttpConnection(port()).request("POST", "/v1/completions", body,
                                                            with_origin("https://evil.example"));
  EXPECT_EQ(other.status, 200);
  EXPECT_EQ(other.header("access-control-allow-origin"), "");
  EXPECT_EQ(get("/health").header("access-control-allow-origin"), "");  // no Origin: none

  const HttpResponse streamed = HttpConnection(port()).request(
      "POST", "/v1/completions", json{{"prompt", "Hi"}, {"max_tokens", 2}, {"stream", true}}.dump(),
      with_origin("http://localhost:3000"));
  EXPECT_EQ(streamed.status, 200);
  EXPECT_EQ(streamed.header("access-control-allow-origin"), "http://localhost:3000");
  const HttpResponse error = HttpConnection(port()).request(
      "POST", "/v1/completions", json{{"prompt", "Hi"}, {"max_tokens", 0}}.dump(),
      with_origin("https://app.example"));
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.header("access-control-allow-origin"), "https://app.example");

  const HttpResponse preflight = HttpConnection(port()).request(
      "OPTIONS", "/v1/chat/completions", "",
      {{"Origin", "https://app.example"},
       {"Access-Control-Request-Method", "POST"},
       {"Access-Control-Request-Headers", "authorization, content-type"}});
  EXPECT_EQ(preflight.status, 204);
  EXPECT_EQ(preflight.header("access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(preflight.header("access-control-allow-methods"), "POST, OPTIONS");
  EXPECT_EQ(preflight.header("access-control-allow-headers"), "authorization, content-type");
  EXPECT_EQ(preflight.header("access-control-max-age"), "600");
  const HttpResponse refused = HttpConnection(port()).request(
      "OPTIONS", "/v1/chat/completions", "",
      {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_EQ(refused.status, 204);
  EXPECT_EQ(refused.header("access-control-allow-origin"), "");
  EXPECT_EQ(refused.header("access-control-allow-methods"), "");
  EXPECT_EQ(refused.header("allow"), "POST, OPTIONS");
}

TEST_F(HttpServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  HttpConnection c(port());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.request("GET", "/health").status, 200);
    const HttpResponse r = c.request("POST", "/v1/completions",
                                     json{{"prompt", "Hi"}, {"max_tokens", 2}}.dump(), kJson);
    EXPECT_EQ(r.status, 200) << r.body;
    const HttpResponse s =
        c.request("POST", "/v1/completions",
                  json{{"prompt", "Hi"}, {"max_tokens", 2}, {"stream", true}}.dump(), kJson);
    EXPECT_EQ(s.status, 200);
    EXPECT_EQ(sse_data(s.body).back(), "[DONE]");
  }
  // An error answer keeps the connection too.
  EXPECT_EQ(c.request("POST", "/v1/completions", "{}", kJson).status, 400);
  EXPECT_EQ(c.request("GET", "/health").status, 200);
}

TEST_F(HttpServer, PipelinedRequestsAreAnsweredInOrder) {
  HttpConnection c(port());
  const std::string completion = HttpConnection::format_request(
      "POST", "/v1/completions", json{{"prompt", "Hi"}, {"max_tokens", 3}}.dump(), kJson);
  ASSERT_TRUE(c.send_raw(completion + HttpConnection::format_request("GET", "/health", "", {})));
  EXPECT_EQ(c.read_response().json()["object"], "text_completion");
  EXPECT_EQ(c.read_response().json()["status"], "ok");
}

// A long generation whose client goes away: the request is aborted, its KV freed, and the daemon
// goes on serving. Streamed: the client closes after the first chunk.
TEST_F(HttpServer, ClientDisconnectMidStreamAbortsTheRequest) {
  ASSERT_TRUE(wait_idle(30));
  {
    HttpConnection c(port());
    ASSERT_TRUE(c.send_raw(HttpConnection::format_request("POST", "/v1/completions",
                                                          json{{"prompt", "Count: 1, 2, 3,"},
                                                               {"max_tokens", 900},
                                                               {"ignore_eos", true},
                                                               {"stream", true}}
                                                              .dump(),
                                                          kJson)));
    ASSERT_TRUE(c.read_head().has_value());
    ASSERT_TRUE(c.read_chunk().has_value());  // the first token is out: the request runs
    // The gauges are published after the step that emitted the token: poll briefly.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    std::string during = get("/metrics").body;
    while (metric_value(during, "lightserve_num_requests_running") != 1.0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      during = get("/metrics").body;
    }
    EXPECT_EQ(metric_value(during, "lightserve_num_requests_running"), 1.0);
    EXPECT_GT(metric_value(during, "lightserve_kv_cache_usage_perc").value_or(0), 0.0);
  }  // closed
  EXPECT_TRUE(wait_idle(5)) << get("/metrics").body;
  EXPECT_FALSE(completion_text({{"prompt", "Hi"}, {"max_tokens", 2}}).empty());
}

// Not streamed: the client gives up while waiting for the whole answer.
TEST_F(HttpServer, ClientDisconnectWhileWaitingAbortsTheRequest) {
  ASSERT_TRUE(wait_idle(30));
  {
    HttpConnection c(port());
    ASSERT_TRUE(c.send_raw(HttpConnection::format_request(
        "POST", "/v1/completions",
        json{{"prompt", "Count: 1, 2, 3,"}, {"max_tokens", 900}, {"ignore_eos", true}}.dump(),
        kJson)));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (metric_value(get("/metrics").body, "lightserve_num_requests_running") != 1.0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_TRUE(wait_idle(5)) << get("/metrics").body;
  EXPECT_EQ(get("/health").status, 200);
}

}  // namespace
