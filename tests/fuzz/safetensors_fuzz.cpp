// libFuzzer target for the Hugging Face folder readers: any byte string must yield either a
// parsed safetensors header or an Error, and, read as a tokenizer.json, either a tokenizer or an
// Error; never a crash, an out-of-bounds read or undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "model/hf_tokenizer.h"
#include "model/safetensors.h"

using lightserve::model::HfTokenizerSources;
using lightserve::model::SafetensorsFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = SafetensorsFile::parse(std::span<const uint8_t>(data, size), "fuzz.safetensors");
  if (file.ok()) {
    // The reader promised that every tensor's bytes lie inside the input: touch the first and
    // last byte of each, so AddressSanitizer catches a broken promise.
    volatile uint8_t sink = 0;
    for (const auto& tensor : file.value()->tensors()) {
      if (tensor.data.empty()) continue;
      sink = sink ^ tensor.data.front() ^ tensor.data.back();
    }
    return 0;
  }
  HfTokenizerSources sources;
  sources.folder = "fuzz";
  sources.tokenizer_json = std::string_view(reinterpret_cast<const char*>(data), size);
  auto tokenizer = lightserve::model::read_hf_tokenizer(sources);
  if (!tokenizer.ok()) return 0;
  auto built = lightserve::model::Tokenizer::from_spec(tokenizer.value().spec);
  if (built.ok()) (void)built.value()->encode("Hello, world! 123 <|im_end|>");
  return 0;
}
