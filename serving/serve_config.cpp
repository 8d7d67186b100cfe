#include "serving/serve_config.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <sstream>

#include "base/units.h"
#include "model/tokenizer.h"
#include "serving/model_loading.h"

namespace lightserve::serving {
namespace {

enum class Kind : uint8_t { kString, kInt32, kInt64, kBytes, kDouble, kUint64 };

// One configuration key: where it lives in the YAML file, its flag, and the field it sets.
struct Entry {
  ConfigKey key;
  Kind kind;
  std::function<void*(ServeConfig&)> field;
};

template <typename T>
std::function<void*(ServeConfig&)> member(T ServeConfig::*m) {
  return [m](ServeConfig& c) -> void* { return &(c.*m); };
}
template <typename T>
std::function<void*(ServeConfig&)> lt_member(T LightTransferOptions::*m) {
  return [m](ServeConfig& c) -> void* { return &(c.lighttransfer.*m); };
}

const std::vector<Entry>& entries() {
  static const std::vector<Entry> table = {
      {{"model", "path", "--model",
        "GGUF model file or Hugging Face folder (default: the fetched SmolLM2-135M-Instruct)"},
       Kind::kString,
       member(&ServeConfig::model_path)},
      {{"model", "name", "--model-name",
        "Model id clients name in requests and /v1/models (default: the file name without .gguf)"},
       Kind::kString,
       member(&ServeConfig::model_name)},
      {{"model", "threads", "--threads", "CPU threads; 0 = one per core"},
       Kind::kInt32,
       member(&ServeConfig::threads)},
      {{"model", "device", "--device", kDeviceHelp}, Kind::kString, member(&ServeConfig::device)},
      {{"model", "load_format", "--load-format",
        "gguf (or auto): the model.path file, or the Hugging Face folder (config.json, "
        "tokenizer.json, *.safetensors) when it is a directory; safetensors: a folder only; "
        "dummy: random weights at model.shape with a byte vocabulary "
        "(throughput and memory at real shapes without a file)"},
       Kind::kString,
       member(&ServeConfig::load_format)},
      {{"model", "shape", "--shape",
        "Dummy model shape: llama-3-8b, llama-2-7b, mistral-7b, qwen2.5-7b, smollm2-135m or "
        "layers=L,hidden=H,heads=N,kv_heads=K,ffn=F,vocab=V,context=C"},
       Kind::kString,
       member(&ServeConfig::shape)},
      {{"model", "chat_template", "--chat-template",
        "Chat format instead of the model file's template: chatml, llama3, llama3.1, mistral-v1, "
        "llama2, or a file holding a Jinja template of one of those families"},
       Kind::kString,
       member(&ServeConfig::chat_template)},
      {{"model", "dummy_type", "--dummy-type",
        "Dummy model weight type: f32, f16, bf16, q8_0, q4_0 or q4_1"},
       Kind::kString,
       member(&ServeConfig::dummy_type)},

      {{"server", "host", "--host", "Address both servers listen on"},
       Kind::kString,
       member(&ServeConfig::host)},
      {{"server", "http_port", "--http-port",
        "HTTP port (OpenAI API, probes, /metrics); 0 = ephemeral, -1 = off"},
       Kind::kInt32,
       member(&ServeConfig::http_port)},
      {{"server", "grpc_port", "--grpc-port", "gRPC port; 0 = ephemeral, -1 = off"},
       Kind::kInt32,
       member(&ServeConfig::grpc_port)},
      {{"server", "api_key", "--api-key",
        "Require `Authorization: Bearer KEY` on both protocols (also LIGHTSERVE_API_KEY); "
        "empty = open"},
       Kind::kString,
       member(&ServeConfig::api_key)},
      {{"server", "ports_file", "--ports-file",
        "Write {\"http\": PORT, \"grpc\": PORT} here once listening (for ephemeral ports)"},
       Kind::kString,
       member(&ServeConfig::ports_file)},
      {{"server", "request_log", "--request-log",
        "One line per finished request on stderr (id, tokens, queue, TTFT, e2e, finish): off, "
        "text or json"},
       Kind::kString,
       member(&ServeConfig::request_log)},
      {{"server", "cors_origins", "--cors-origins",
        "Browser origins allowed to call the HTTP API (CORS), comma-separated "
        "(https://app.example.com), or * for any; empty = no CORS headers"},
       Kind::kString,
       member(&ServeConfig::cors_origins)},

      {{"limits", "max_body_bytes", "--max-body-bytes",
        "Largest HTTP body / gRPC message (bytes, or with K/M/G/Ki/Mi/Gi)"},
       Kind::kBytes,
       member(&ServeConfig::max_body_bytes)},
      {{"limits", "max_prompt_tokens", "--max-prompt-tokens", "Largest prompt; 0 = the context"},
       Kind::kInt32,
       member(&ServeConfig::max_prompt_tokens)},
      {{"limits", "max_tokens", "--max-tokens-limit",
        "Largest max_tokens a request may ask for; 0 = the context"},
       Kind::kInt32,
       member(&ServeConfig::max_tokens_limit)},
      {{"limits", "default_max_tokens", "--default-max-tokens",
        "max_tokens of a request that names none"},
       Kind::kInt32,
       member(&ServeConfig::default_max_tokens)},
      {{"limits", "client_timeout_seconds", "--client-timeout",
        "Seconds to read a whole request, and keep-alive idle time"},
       Kind::kDouble,
       member(&ServeConfig::client_timeout_seconds)},
      {{"limits", "max_connections", "--max-connections",
        "Open HTTP connections at most; at the limit an idle keep-alive connection of the "
        "client holding the most is closed to make room, else the new one gets 503"},
       Kind::kInt32,
       member(&ServeConfig::max_connections)},
      {{"limits", "max_connections_per_client", "--max-connections-per-client",
        "Open HTTP connections from one client address at most (beyond it 503); 0 = no limit "
        "(behind a proxy every connection has the proxy's address)"},
       Kind::kInt32,
       member(&ServeConfig::max_connections_per_client)},
      {{"limits", "max_stream_backlog", "--max-stream-backlog",
        "Tokens a response may be generated ahead of what its client has taken; beyond it the "
        "request pauses, keeping its KV, until the client reads (backpressure); 0 = no limit"},
       Kind::kInt32,
       member(&ServeConfig::max_stream_backlog)},

      {{"engine", "kv_budget", "--kv-budget",
        "Bytes of KV cache (bytes, or with K/M/G/Ki/Mi/Gi); sizes the KV page pool"},
       Kind::kBytes,
       member(&ServeConfig::kv_budget_bytes)},
      {{"engine", "gpu_memory_utilization", "--gpu-memory-utilization",
        "Fraction (0, 1] of the GPU's total memory this process may use (CUDA only): the KV "
        "arena gets what the weights, the measured activation peak and a margin leave; 0 = "
        "off (kv_budget sizes it). Not together with a kv_budget other than its default"},
       Kind::kDouble,
       member(&ServeConfig::gpu_memory_utilization)},
      {{"engine", "kv_dtype", "--kv-dtype",
        "Element type of the KV cache: f16 or bf16 (same 2 bytes per value; bf16 has f32's "
        "range and 8 bits of mantissa)"},
       Kind::kString,
       member(&ServeConfig::kv_dtype)},
      {{"engine", "context", "--context",
        "Tokens per request, prompt + output; 0 = the model's training context"},
       Kind::kInt32,
       member(&ServeConfig::context)},
      {{"engine", "max_running", "--max-running", "Requests holding KV at once"},
       Kind::kInt32,
       member(&ServeConfig::max_running)},
      {{"engine", "max_waiting", "--max-waiting",
        "Queued requests at most; beyond it 429 / RESOURCE_EXHAUSTED"},
       Kind::kInt32,
       member(&ServeConfig::max_waiting)},
      {{"engine", "policy", "--policy",
        "Admission: reserve (prompt + max_tokens up front) or optimistic (preempt on shortage)"},
       Kind::kString,
       member(&ServeConfig::policy)},
      {{"engine", "scheduling", "--scheduling",
        "fcfs (arrival order) or priority (a request's priority field first, then arrival)"},
       Kind::kString,
       member(&ServeConfig::scheduling)},
      {{"engine", "step_budget", "--step-budget",
        "Token-layers of work per engine step (prefills advance a few layers per step within "
        "it, after every decode); 0 = 2048 tokens through every layer"},
       Kind::kInt64,
       member(&ServeConfig::step_budget)},
      {{"engine", "device_sampling", "--device-sampling",
        "on: a request that reads no more of its logits than the best few tokens (greedy, or "
        "temperature with top-k, and no penalties, logit bias, logprobs or grammar) gets only "
        "those from the step (top-k on the GPU: k pairs per row instead of the vocabulary); "
        "off: every row whole. The tokens are the same either way"},
       Kind::kString,
       member(&ServeConfig::device_sampling)},

      {{"lighttransfer", "mode", "--lt-mode",
        "test (lazy layers chosen per request), static (--plan), full, streaming, random"},
       Kind::kString,
       lt_member(&LightTransferOptions::mode)},
      {{"lighttransfer", "lazy_fraction", "--lazy-fraction",
        "Fraction of layers served lazily (f); default: the plan's validated fraction, else 0.5"},
       Kind::kDouble,
       lt_member(&LightTransferOptions::lazy_fraction)},
      {{"lighttransfer", "score", "--lt-score",
        "Laziness score of online mode: mean (the paper's), head-min, head-min-last; default: "
        "the plan's, else mean"},
       Kind::kString,
       lt_member(&LightTransferOptions::score)},
      {{"lighttransfer", "sink", "--sink", "Initial tokens a lazy layer keeps (S)"},
       Kind::kInt32,
       lt_member(&LightTransferOptions::sink)},
      {{"lighttransfer", "window", "--window", "Recent tokens a lazy layer keeps (W)"},
       Kind::kInt32,
       lt_member(&LightTransferOptions::window)},
      {{"lighttransfer", "w_last", "--w-last",
        "Last prompt tokens whose attention scores laziness"},
       Kind::kInt32,
       lt_member(&LightTransferOptions::w_last)},
      {{"lighttransfer", "plan", "--plan",
        "Plan file from `lightserve calibrate`; default: the one shipped for the model "
        "(docs/plans), none: no plan"},
       Kind::kString,
       lt_member(&LightTransferOptions::plan)},
      {{"lighttransfer", "seed", "--lt-seed", "Seed of the random mode's lazy set"},
       Kind::kUint64,
       lt_member(&LightTransferOptions::seed)},

      {{"shutdown", "drain_timeout_seconds", "--drain-timeout",
        "On SIGTERM: seconds in-flight requests may take to finish before they are aborted"},
       Kind::kDouble,
       member(&ServeConfig::drain_timeout_seconds)},
  };
  return table;
}

template <typename T>
bool parse_integer(const std::string& text, T& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && !text.empty();
}

// Sets the entry's field from `text`; an error message (without the key) when it does not parse.
std::optional<std::string> set_value(const Entry& e, ServeConfig& c, const std::string& text) {
  void* f = e.field(c);
  switch (e.kind) {
    case Kind::kString:
      *static_cast<std::string*>(f) = text;
      return std::nullopt;
    case Kind::kInt32:
      if (!parse_integer(text, *static_cast<int32_t*>(f))) return "expected an integer";
      return std::nullopt;
    case Kind::kInt64:
      if (!parse_integer(text, *static_cast<int64_t*>(f))) return "expected an integer";
      return std::nullopt;
    case Kind::kUint64:
      if (!parse_integer(text, *static_cast<uint64_t*>(f))) return "expected an unsigned integer";
      return std::nullopt;
    case Kind::kBytes: {
      const int64_t bytes = parse_bytes(text);
      if (bytes < 0) return "expected a size in bytes (e.g. 1048576, 512MiB, 4G)";
      *static_cast<int64_t*>(f) = bytes;
      return std::nullopt;
    }
    case Kind::kDouble: {
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v)) {
        return "expected a number";
      }
      *static_cast<double*>(f) = v;
      return std::nullopt;
    }
  }
  return "unknown kind";
}

std::string get_value(const Entry& e, const ServeConfig& c) {
  void* f = e.field(const_cast<ServeConfig&>(c));
  switch (e.kind) {
    case Kind::kString:
      return *static_cast<std::string*>(f);
    case Kind::kInt32:
      return std::to_string(*static_cast<int32_t*>(f));
    case Kind::kInt64:
    case Kind::kBytes:
      return std::to_string(*static_cast<int64_t*>(f));
    case Kind::kUint64:
      return std::to_string(*static_cast<uint64_t*>(f));
    case Kind::kDouble: {
      std::ostringstream out;
      out << *static_cast<double*>(f);
      return out.str();
    }
  }
  return {};
}

std::string dotted(const ConfigKey& k) {
  return k.section + "." + k.key;
}

// `value` as a YAML double-quoted scalar that loads back to the same bytes: '"', '\\' and the
// control characters escaped (a raw line break inside the quotes would fold into a space).
std::string yaml_quoted(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "\"";
  for (const char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte == 0x7F) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

const char* type_name(Kind kind) {
  switch (kind) {
    case Kind::kString:
      return "TEXT";
    case Kind::kInt32:
    case Kind::kInt64:
      return "INT";
    case Kind::kUint64:
      return "UINT";
    case Kind::kBytes:
      return "SIZE";
    case Kind::kDouble:
      return "NUM";
  }
  return "TEXT";
}

}  // namespace

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> k;
    for (const Entry& e : entries()) {
      k.push_back(e.key);
      k.back().value_type = type_name(e.kind);
    }
    return k;
  }();
  return keys;
}

model::ModelSource ServeConfig::model_source() const {
  model::ModelSource source(model_path);
  if (!chat_template.empty()) {
    auto text = model::ChatTemplate::read_argument(chat_template);
    if (text) source.chat_template = std::move(text).value();
  }
  const auto format = model::parse_load_format(load_format);
  if (format) source.format = format.value();
  const auto type = model::parse_dummy_type(dummy_type);
  if (source.format == model::LoadFormat::kDummy && type) {
    source.shape = shape;
    source.dummy_type = type.value();
  }
  return source;
}

Status ServeConfig::validate() const {
  auto bad = [](const char* key, const std::string& why) {
    return Status(Error{std::string("config: ") + key + " " + why});
  };
  if (http_port < -1 || http_port > 65535) return bad("server.http_port", "must be in [-1, 65535]");
  if (grpc_port < -1 || grpc_port > 65535) return bad("server.grpc_port", "must be in [-1, 65535]");
  if (http_port == -1 && grpc_port == -1) {
    return bad("server.http_port", "and server.grpc_port are both -1: nothing would listen");
  }
  if (http_port > 0 && http_port == grpc_port) {
    return bad("server.grpc_port", "equals server.http_port (" + std::to_string(http_port) + ")");
  }
  if (threads < 0) return bad("model.threads", "must be >= 0");
  if (!chat_template.empty()) {
    if (auto t = model::ChatTemplate::read_argument(chat_template); !t) {
      return bad("model.chat_template", t.error().message);
    }
  }
  if (auto f = model::parse_load_format(load_format); !f) {
    return bad("model.load_format", f.error().message);
  } else if (f.value() == model::LoadFormat::kDummy) {
    if (auto sh = model::parse_shape(shape); !sh) return bad("model.shape", sh.error().message);
    if (auto t = model::parse_dummy_type(dummy_type); !t) {
      return bad("model.dummy_type", t.error().message);
    }
  }
  if (max_body_bytes < 1024) return bad("limits.max_body_bytes", "must be >= 1024");
  if (max_prompt_tokens < 0) return bad("limits.max_prompt_tokens", "must be >= 0");
  if (max_tokens_limit < 0) return bad("limits.max_tokens", "must be >= 0");
  if (default_max_tokens < 1) return bad("limits.default_max_tokens", "must be >= 1");
  if (!(client_timeout_seconds > 0)) return bad("limits.client_timeout_seconds", "must be > 0");
  if (max_connections < 1) return bad("limits.max_connections", "must be >= 1");
  if (max_connections_per_client < 0) {
    return bad("limits.max_connections_per_client", "must be >= 0");
  }
  if (max_stream_backlog < 0) return bad("limits.max_stream_backlog", "must be >= 0");
  if (kv_budget_bytes <= 0) return bad("engine.kv_budget", "must be > 0");
  if (!(gpu_memory_utilization >= 0 && gpu_memory_utilization <= 1)) {
    return bad("engine.gpu_memory_utilization", "must be in (0, 1], or 0 for off");
  }
  if (gpu_memory_utilization > 0 && kv_budget_bytes != kDefaultKvBudget) {
    return bad("engine.gpu_memory_utilization",
               "and engine.kv_budget are mutually exclusive: the utilization sizes the KV "
               "arena; leave kv_budget at its default or set gpu_memory_utilization to 0");
  }
  if (!kernels::parse_kv_type(kv_dtype)) {
    return bad("engine.kv_dtype", "must be f16 or bf16, got '" + kv_dtype + "'");
  }
  if (context < 0) return bad("engine.context", "must be >= 0");
  if (max_running < 1) return bad("engine.max_running", "must be >= 1");
  if (max_waiting < 0) return bad("engine.max_waiting", "must be >= 0");
  if (request_log != "off" && request_log != "text" && request_log != "json") {
    return bad("server.request_log", "must be off, text or json, got '" + request_log + "'");
  }
  if (policy != "reserve" && policy != "optimistic") {
    return bad("engine.policy", "must be reserve or optimistic, got '" + policy + "'");
  }
  if (scheduling != "fcfs" && scheduling != "priority") {
    return bad("engine.scheduling", "must be fcfs or priority, got '" + scheduling + "'");
  }
  if (step_budget < 0) return bad("engine.step_budget", "must be >= 0");
  if (device_sampling != "on" && device_sampling != "off") {
    return bad("engine.device_sampling", "must be on or off, got '" + device_sampling + "'");
  }
  if (drain_timeout_seconds < 0) return bad("shutdown.drain_timeout_seconds", "must be >= 0");
  // LightTransfer settings that need no model, checked before it loads (a bad one exits 2 at
  // once instead of 1 after the load); the plan's layer count waits for the model.
  const auto mode = model::parse_lt_mode(lighttransfer.mode);
  if (!mode) return bad("lighttransfer.mode", mode.error().message);
  model::LightTransferSettings lt;
  lt.mode = mode.value() == model::LtMode::kStatic && !lighttransfer.plan.empty()
                ? model::LtMode::kOnline  // the plan itself is loaded with the model
                : mode.value();
  if (lighttransfer.lazy_fraction != LightTransferOptions::kFromPlan)
    lt.lazy_fraction = lighttransfer.lazy_fraction;  // else the plan's, once the model is known
  if (!lighttransfer.score.empty()) {
    const auto score = model::parse_lazy_score(lighttransfer.score);
    if (!score) return bad("lighttransfer.score", score.error().message);
  }
  lt.sink = lighttransfer.sink;
  lt.window = lighttransfer.window;
  lt.w_last = lighttransfer.w_last;
  if (Status s = lt.validate(/*num_layers=*/0); !s) return bad("lighttransfer:", s.message());
  return Status::Ok();
}

Status load_config_file(const std::string& path, ServeConfig& config) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return Error{path + ": cannot open the config file"};
  } catch (const YAML::Exception& e) {
    return Error{path + ": not valid YAML: " + e.what()};
  }
  if (root.IsNull()) return Status::Ok();  // an empty file: all defaults
  if (!root.IsMap()) return Error{path + ": the top level must be a map of sections"};
  for (const auto& section : root) {
    const std::string name = section.first.as<std::string>("");
    bool known_section = false;
    for (const Entry& e : entries()) known_section |= e.key.section == name;
    if (!known_section) return Error{path + ": unknown section '" + name + "'"};
    if (section.second.IsNull()) continue;
    if (!section.second.IsMap()) return Error{path + ": section '" + name + "' must be a map"};
    for (const auto& item : section.second) {
      const std::string key = item.first.as<std::string>("");
      const Entry* entry = nullptr;
      for (const Entry& e : entries()) {
        if (e.key.section == name && e.key.key == key) entry = &e;
      }
      if (entry == nullptr) return Error{path + ": unknown key '" + name + "." + key + "'"};
      if (!item.second.IsScalar()) {
        return Error{path + ": " + dotted(entry->key) + ": expected a single value"};
      }
      if (auto why = set_value(*entry, config, item.second.Scalar())) {
        return Error{path + ": " + dotted(entry->key) + ": " + *why + ", got '" +
                     item.second.Scalar() + "'"};
      }
    }
  }
  return Status::Ok();
}

std::string format_config(const ServeConfig& config) {
  std::ostringstream out;
  std::string section;
  for (const Entry& e : entries()) {
    if (e.key.section != section) {
      section = e.key.section;
      out << section << ":\n";
    }
    std::string value = get_value(e, config);
    if (e.kind == Kind::kString) {
      if (e.key.key == "api_key" && !value.empty()) value = "<set>";
      value = yaml_quoted(value);
    }
    out << "  " << e.key.key << ": " << value << "\n";
  }
  return out.str();
}

ServeConfig config_from_environment() {
  ServeConfig config;
  if (const char* key = std::getenv("LIGHTSERVE_API_KEY"); key != nullptr) config.api_key = key;
  config.device = default_device();
  return config;
}

std::optional<std::string> set_config_value(size_t index, const std::string& text,
                                            ServeConfig& config) {
  return set_value(entries().at(index), config, text);
}

std::string config_value(size_t index, const ServeConfig& config) {
  return get_value(entries().at(index), config);
}

Status finish_config(ServeConfig& config) {
  if (config.model_path.empty()) config.model_path = default_model_path();
  return config.validate();
}

}  // namespace lightserve::serving
