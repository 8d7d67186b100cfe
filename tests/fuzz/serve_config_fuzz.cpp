// libFuzzer target for the `lightserve serve` YAML config loader (serving/serve_config.h): any
// file content must give either a config or an Error naming the problem, never an exception
// (the daemon would die with terminate() instead of exiting 2 with the message), a crash or UB.
// When it loads, validate() answers, and the effective config round-trips: format_config()
// loaded again into defaults formats to the same text (what --print-config prints can be fed back
// as a config file). The loader reads a path, so each input goes through one temporary file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "base/check.h"
#include "serving/serve_config.h"

namespace {

using lightserve::serving::ServeConfig;

std::string config_path;

void write_file(std::string_view bytes) {
  std::ofstream out(config_path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  LS_CHECK(out.good()) << "cannot write " << config_path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const std::filesystem::path dir =
      std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
  config_path = (dir / ("lightserve_config_fuzz_" + std::to_string(getpid()) + ".yaml")).string();
  std::atexit([] { std::remove(config_path.c_str()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_file(std::string_view(reinterpret_cast<const char*>(data), size));
  ServeConfig config;
  const lightserve::Status loaded = lightserve::serving::load_config_file(config_path, config);
  if (!loaded.ok()) {
    LS_CHECK(!loaded.message().empty()) << "an error without a message";
    return 0;
  }
  (void)config.validate();
  const std::string text = lightserve::serving::format_config(config);
  write_file(text);
  ServeConfig again;
  const lightserve::Status reloaded = lightserve::serving::load_config_file(config_path, again);
  LS_CHECK(reloaded.ok()) << "format_config() output does not load: " << reloaded.message() << "\n"
                          << text;
  const std::string text_again = lightserve::serving::format_config(again);
  LS_CHECK(text_again == text) << "format_config() does not round-trip:\n"
                               << text << "\n---\n"
                               << text_again;
  return 0;
}
