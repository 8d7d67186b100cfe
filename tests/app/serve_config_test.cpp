// The serve configuration: deploy/config.yaml documents exactly the daemon's keys with their
// defaults; bad files and flags get errors naming the key; flags override the file.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "app/serve_flags.h"

namespace lightserve::cli {
using namespace serving;  // the config table under test

namespace {

const std::string kDeployConfig = std::string(LIGHTSERVE_SOURCE_DIR) + "/deploy/config.yaml";

std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("lightserve_cfg_" + std::to_string(::getpid()) + "_" + name + ".yaml");
  std::ofstream(path) << text;
  return path.string();
}

// Parses `args` as `serve ARGS` and resolves them.
Result<ServeConfig> resolve(std::vector<std::string> args) {
  CLI::App app;
  CLI::App* cmd = app.add_subcommand("serve");
  ServeFlags flags(cmd);
  args.insert(args.begin(), "serve");
  std::reverse(args.begin(), args.end());  // CLI11's vector form takes them reversed
  app.parse(args);
  return flags.resolve();
}

TEST(ServeConfig, DeployConfigNamesEveryKeyAndNothingElse) {
  const YAML::Node root = YAML::LoadFile(kDeployConfig);
  std::set<std::string> in_file;
  for (const auto& section : root) {
    for (const auto& item : section.second) {
      in_file.insert(section.first.as<std::string>() + "." + item.first.as<std::string>());
    }
  }
  std::set<std::string> known;
  for (const ConfigKey& k : config_keys()) known.insert(k.section + "." + k.key);
  EXPECT_EQ(in_file, known);
}

TEST(ServeConfig, DeployConfigHoldsTheDefaults) {
  ServeConfig loaded;
  ASSERT_TRUE(load_config_file(kDeployConfig, loaded).ok());
  EXPECT_EQ(format_config(loaded), format_config(ServeConfig{}));
  EXPECT_TRUE(loaded.validate().ok());
}

TEST(ServeConfig, EveryKeyHasAFlagAndHelp) {
  std::set<std::string> flags;
  for (const ConfigKey& k : config_keys()) {
    EXPECT_EQ(k.flag.rfind("--", 0), 0u) << k.key;
    EXPECT_FALSE(k.help.empty()) << k.key;
    EXPECT_TRUE(flags.insert(k.flag).second) << "duplicate flag " << k.flag;
  }
}

TEST(ServeConfig, FlagsOverrideTheFile) {
  const std::string file = write_temp("override",
                                      "engine:\n  kv_budget: 64MiB\n  max_running: 3\n"
                                      "lighttransfer:\n  lazy_fraction: 0.25\n");
  auto r = resolve({"--config", file, "--max-running", "5", "--lt-mode", "full"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value().kv_budget_bytes, 64ll << 20);        // from the file
  EXPECT_EQ(r.value().max_running, 5);                     // the flag wins
  EXPECT_EQ(r.value().lighttransfer.lazy_fraction, 0.25);  // from the file
  EXPECT_EQ(r.value().lighttransfer.mode, "full");         // flag
  EXPECT_FALSE(r.value().model_path.empty());              // the default model
}

TEST(ServeConfig, BadFilesNameTheProblem) {
  struct Case {
    const char* name;
    const char* yaml;
    const char* message;
  };
  const Case cases[] = {
      {"unknown_section", "engines:\n  max_running: 3\n", "unknown section 'engines'"},
      {"unknown_key", "engine:\n  max_runing: 3\n", "unknown key 'engine.max_runing'"},
      {"not_integer", "engine:\n  max_running: lots\n", "engine.max_running: expected an integer"},
      {"bad_size", "engine:\n  kv_budget: 12 parsecs\n", "engine.kv_budget: expected a size"},
      {"not_number", "limits:\n  client_timeout_seconds: soon\n", "expected a number"},
      {"list_value", "server:\n  host: [a, b]\n", "server.host: expected a single value"},
      {"section_scalar", "server: 5\n", "section 'server' must be a map"},
      {"top_list", "- a\n- b\n", "top level must be a map"},
      {"bad_yaml", "engine: {max_running: 3\n", "not valid YAML"},
  };
  for (const Case& c : cases) {
    ServeConfig config;
    const Status s = load_config_file(write_temp(c.name, c.yaml), config);
    ASSERT_FALSE(s.ok()) << c.name;
    EXPECT_NE(s.message().find(c.message), std::string::npos) << c.name << ": " << s.message();
  }
  ServeConfig config;
  const Status missing = load_config_file("/nonexistent/lightserve.yaml", config);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("cannot open"), std::string::npos);
}

TEST(ServeConfig, ImpossibleValuesNameTheKey) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  const Case cases[] = {
      {{"--http-port", "70000"}, "server.http_port"},
      {{"--http-port", "-1", "--grpc-port", "-1"}, "nothing would listen"},
      {{"--http-port", "9000", "--grpc-port", "9000"}, "equals server.http_port"},
      {{"--max-running", "0"}, "engine.max_running"},
      {{"--policy", "greedy"}, "engine.policy"},
      {{"--scheduling", "lifo"}, "engine.scheduling"},
      {{"--kv-budget", "0"}, "engine.kv_budget"},
      {{"--kv-budget", "lots"}, "--kv-budget: expected a size"},
      {{"--max-running", "x"}, "--max-running: expected an integer"},
      {{"--client-timeout", "0"}, "limits.client_timeout_seconds"},
      {{"--default-max-tokens", "0"}, "limits.default_max_tokens"},
      {{"--drain-timeout", "-1"}, "shutdown.drain_timeout_seconds"},
      {{"--lt-mode", "bogus"}, "lighttransfer.mode"},
      {{"--window", "0"}, "window must be ≥ 1"},
      {{"--lazy-fraction", "1.5"}, "lazy_fraction must be in [0, 1]"},
      {{"--lt-mode", "static"}, "needs a plan file"},
      {{"--kv-dtype", "f32"}, "engine.kv_dtype must be f16 or bf16, got 'f32'"},
      {{"--device-sampling", "yes"}, "engine.device_sampling must be on or off, got 'yes'"},
      {{"--gpu-memory-utilization", "1.5"}, "engine.gpu_memory_utilization must be in (0, 1]"},
      {{"--gpu-memory-utilization", "-0.1"}, "engine.gpu_memory_utilization"},
      {{"--gpu-memory-utilization", "0.9", "--kv-budget", "1GiB"},
       "engine.kv_budget are mutually exclusive"},
  };
  for (const Case& c : cases) {
    auto r = resolve(c.args);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_NE(r.error().message.find(c.message), std::string::npos) << r.error().message;
  }
}

// deploy/kubernetes.yaml's embedded config is a valid serve config, and its probes name the routes.
TEST(ServeConfig, KubernetesManifestCarriesAValidConfig) {
  const std::vector<YAML::Node> docs =
      YAML::LoadAllFromFile(std::string(LIGHTSERVE_SOURCE_DIR) + "/deploy/kubernetes.yaml");
  ASSERT_EQ(docs.size(), 3u);
  const std::string embedded = docs[0]["data"]["config.yaml"].as<std::string>();
  ServeConfig config;
  ASSERT_TRUE(load_config_file(write_temp("k8s", embedded), config).ok());
  EXPECT_TRUE(config.validate().ok());
  EXPECT_EQ(config.host, "0.0.0.0");
  const YAML::Node container = docs[1]["spec"]["template"]["spec"]["containers"][0];
  EXPECT_EQ(container["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/ready");
  EXPECT_EQ(container["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/health");
  // The grace period leaves the drain time to finish.
  EXPECT_GT(docs[1]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as<double>(),
            config.drain_timeout_seconds);
}

TEST(ServeConfig, PrintedConfigLoadsBack) {
  auto r = resolve({"--kv-budget", "1GiB", "--lazy-fraction", "0.75", "--host", "0.0.0.0"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ServeConfig reloaded;
  ASSERT_TRUE(load_config_file(write_temp("roundtrip", format_config(r.value())), reloaded).ok());
  EXPECT_EQ(format_config(reloaded), format_config(r.value()));
}

}  // namespace
}  // namespace lightserve::cli
