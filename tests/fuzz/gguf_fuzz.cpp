// libFuzzer target for the GGUF reader and the LLaMA config/tensor binding: any byte string must
// yield either a parsed file or an Error, never a crash, a leak, an out-of-bounds read or
// undefined behaviour. Build and run with scripts/fuzz_gguf.sh.
#include <cstddef>
#include <cstdint>
#include <span>

#include "model/config.h"
#include "model/gguf.h"

using lightserve::model::GgufFile;
using lightserve::model::LlamaConfig;
using lightserve::model::LlamaTensors;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = GgufFile::parse(std::span<const uint8_t>(data, size), "fuzz.gguf");
  if (!file.ok()) return 0;
  const GgufFile& f = *file.value();

  // Exercise the typed accessors on every key, whatever its type.
  for (const auto& [key, value] : f.metadata()) {
    (void)f.get_int(key);
    (void)f.get_float(key);
    (void)f.get_bool(key);
    (void)f.get_string(key);
    (void)f.get_string_array(key);
    (void)f.get_int_array(key);
  }
  // The reader promised that every tensor's bytes lie inside the input: touch the first and last
  // byte of each, so AddressSanitizer catches a broken promise.
  volatile uint8_t sink = 0;
  for (const auto& info : f.tensors()) {
    if (info.num_bytes == 0) continue;
    const uint8_t* bytes = f.tensor_data(info);
    sink = sink ^ bytes[0] ^ bytes[info.num_bytes - 1];
  }
  f.prefault(nullptr);

  auto config = LlamaConfig::from_gguf(f);
  if (!config.ok()) return 0;
  auto tensors = LlamaTensors::bind(f, config.value());
  (void)tensors;
  return 0;
}
