// `lightserve serve` configuration (docs/design.md §7): one YAML file where every key is also a
// flag.
//
// The keys live in one table (serve_config.cpp): section, key, flag, help and the field it sets.
// The YAML loader, the flags (app/serve_flags.h), `--print-config` and the test that checks
// deploy/config.yaml documents every key all read that table, so a key cannot exist in one place
// only. Precedence: built-in defaults < the YAML file < flags given on the command line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/model_source.h"
#include "serving/lighttransfer_options.h"

namespace lightserve::serving {

struct ServeConfig {
  // model:
  std::string model_path;            // empty: default_model_path() (ServeFlags::resolve fills it)
  std::string model_name;            // the id clients name; default: the file name without .gguf
  int32_t threads = 0;               // CPU threads; 0 = one per core
  std::string device = "cpu";        // cpu, cuda or cuda:N (cli::make_backend)
  std::string load_format = "gguf";  // gguf | dummy (model/model_source.h)
  std::string shape = "llama-3-8b";  // dummy: a preset or a spec
  std::string dummy_type = "q4_0";   // dummy: the weights' type
  std::string chat_template;         // a format name or a template file; empty: the model's

  // server:
  std::string host = "127.0.0.1";
  int32_t http_port = 8080;         // 0 = an ephemeral port (tests); -1 = no HTTP server
  int32_t grpc_port = 50051;        // 0 = an ephemeral port (tests); -1 = no gRPC server
  std::string api_key;              // empty = no authentication; also LIGHTSERVE_API_KEY
  std::string ports_file;           // written once listening: {"http": port, "grpc": port}
  std::string request_log = "off";  // off | text | json: one stderr line per finished request
  std::string cors_origins;  // browser origins allowed (CORS), comma-separated or *; empty = none

  // limits:
  int64_t max_body_bytes = 1 << 20;        // HTTP request bodies and gRPC messages
  int32_t max_prompt_tokens = 0;           // 0 = the context
  int32_t max_tokens_limit = 0;            // the largest max_tokens a request may ask; 0 = context
  int32_t default_max_tokens = 256;        // when a request names none
  double client_timeout_seconds = 30;      // reading a request (slow clients), idle keep-alive
  int32_t max_connections = 256;           // open HTTP connections
  int32_t max_connections_per_client = 0;  // from one client address; 0 = no limit
  int32_t max_stream_backlog = 256;  // events a stream may run ahead of its reader; 0 = no limit

  // engine:
  static constexpr int64_t kDefaultKvBudget = 512ll << 20;
  int64_t kv_budget_bytes = kDefaultKvBudget;  // the KV arena
  // > 0: the KV arena is sized from the GPU's memory instead (vLLM's --gpu-memory-utilization:
  // the fraction of the GPU's total memory this process may use; serving/gpu_memory.h). Setting
  // kv_budget to anything but its default as well is an error.
  double gpu_memory_utilization = 0;
  std::string kv_dtype = "f16";  // the KV cache's element type: f16 | bf16
  int32_t context = 0;           // tokens per request (prompt + output); 0 = the model's
  int32_t max_running = 64;
  int32_t max_waiting = 256;        // queued requests; beyond it 429 / RESOURCE_EXHAUSTED
  std::string policy = "reserve";   // reserve | optimistic
  std::string scheduling = "fcfs";  // fcfs | priority (higher request priority first)
  int64_t step_budget = 0;          // token-layers per step; 0 = 2048 tokens through every layer
  // on: a step brings back only the best few candidates of a row whose sampler reads no more
  // (SchedulerConfig::candidate_sampling; on a GPU, top-k on the device); off: whole rows.
  std::string device_sampling = "on";

  // lighttransfer: (mode, lazy_fraction, sink, window, w_last, plan, seed)
  LightTransferOptions lighttransfer;

  // shutdown:
  double drain_timeout_seconds = 30;

  // Checks ranges and names the key of the first bad value.
  Status validate() const;
  // The model the model.* keys name (validate() has checked they parse).
  model::ModelSource model_source() const;
};

// The keys, for the loader, the flags and the tests.
struct ConfigKey {
  std::string section;  // "engine"
  std::string key;      // "kv_budget"
  std::string flag;     // "--kv-budget"
  std::string help;
  const char* value_type = "TEXT";  // for --help: TEXT, INT, UINT, SIZE or NUM
};
const std::vector<ConfigKey>& config_keys();

// Reads a YAML file into `config` (keys absent from the file keep their values). Errors name the
// file and the key: unknown sections or keys, wrong types, unparsable sizes.
Status load_config_file(const std::string& path, ServeConfig& config);

// The effective configuration as YAML, in the table's order (`serve --print-config`).
std::string format_config(const ServeConfig& config);

// Built-in defaults, then the environment: LIGHTSERVE_API_KEY (server.api_key) and
// LIGHTSERVE_DEVICE (model.device).
ServeConfig config_from_environment();

// Sets key `index` of config_keys() from its text form; the reason when it does not parse (without
// the key's name, which the caller knows).
std::optional<std::string> set_config_value(size_t index, const std::string& text,
                                            ServeConfig& config);
// Key `index` of config_keys() in its text form.
std::string config_value(size_t index, const ServeConfig& config);

// After file and flags: fills what is still unset (the default model path) and validates.
Status finish_config(ServeConfig& config);

}  // namespace lightserve::serving
