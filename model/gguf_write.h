// GGUF v3 writer: a GgufFile (read from disk, made from a Hugging Face folder, or a dummy model)
// written back as a file that GgufFile::open and llama.cpp's gguf reader load. Its first use is
// the llama.cpp comparison on a GPU (issue 12): `lightserve export --load-format dummy --shape
// llama-3-8b --dummy-type f16` writes the weights our dummy loader makes, so both engines run the
// same bytes (docs/benchmarks.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/gguf.h"

namespace lightserve::model {

// The bytes before the data section: magic, version 3, the counts, every metadata key (in the
// map's order) and tensor info (with its offset as given), zero-padded to `alignment` (a power
// of two). Errors name a value whose type and content disagree.
Result<std::vector<uint8_t>> encode_gguf_header(
    const std::map<std::string, GgufValue, std::less<>>& metadata,
    const std::vector<GgufTensorInfo>& tensors, uint64_t alignment);

struct GgufWriteOptions {
  // Writes one tensor's info.num_bytes bytes into `data`, in place of the file's own tensor data
  // (a dummy model opened without weights: model_source.h's dummy_weight_fill). Called from the
  // writer threads, each tensor once; it must be safe to call concurrently.
  GgufFile::FillFn fill;
  int num_threads = 1;  // tensors filled and written in parallel
  ProgressFn progress;  // (bytes written, bytes total), from one thread at a time
};

// Writes `file` to `path`: the header (encode_gguf_header at the file's general.alignment,
// default 32), then each tensor at its offset. The bytes go to `path`.partial, renamed to `path`
// when complete, so an interrupted write leaves no file that looks whole. Errors name the path
// and the system's reason.
Status write_gguf(const GgufFile& file, const std::string& path,
                  const GgufWriteOptions& options = {});

}  // namespace lightserve::model
