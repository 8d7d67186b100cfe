// Read-only private mappings of whole regular files for the model readers (gguf.cpp,
// safetensors.cpp): weights are used in place and never written back. Internal to model/.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/status.h"

namespace lightserve::model::detail {

// Maps `path` whole. An empty file gives an empty span (nothing mapped); errors name the path:
// cannot open, cannot stat, not a regular file, cannot map.
Result<std::span<const uint8_t>> map_file(const std::string& path);

// Unmaps what map_file returned (an empty span: nothing).
void unmap_file(std::span<const uint8_t> bytes);

}  // namespace lightserve::model::detail
