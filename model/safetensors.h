// Reader for Hugging Face safetensors files: an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and [begin, end) byte range, then the data. The file is
// memory-mapped read-only; every header problem with an untrusted file becomes an Error naming
// the file and the tensor, and nothing here reads out of bounds.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lightserve::model {

// The dtypes a safetensors header may name; only kF32, kF16 and kBF16 can be loaded, the others
// are recognised so that errors can say which type a tensor has.
enum class SafetensorsDType { kF32, kF16, kBF16, kOther };

struct SafetensorsTensor {
  std::string name;
  std::string dtype_name;  // as in the header: "BF16", "F8_E4M3", ...
  SafetensorsDType dtype = SafetensorsDType::kOther;
  std::vector<int64_t> shape;  // row-major, as PyTorch: shape.back() is the contiguous axis
  int64_t num_elements = 0;
  std::span<const uint8_t> data;  // checked to hold exactly num_elements values of its dtype
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors name the file ("model.safetensors: truncated: the header
  // says 4096 bytes but the file has 100 after the length").
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  // Same checks over bytes already in memory (the fuzzer); `bytes` must outlive the result.
  static Result<std::unique_ptr<SafetensorsFile>> parse(std::span<const uint8_t> bytes,
                                                        std::string name = "<memory>");
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }

 private:
  SafetensorsFile() = default;
  Status parse_header();

  std::string path_;
  std::span<const uint8_t> bytes_;
  void* mapping_ = nullptr;  // non-null when we own an mmap of bytes_
  std::vector<SafetensorsTensor> tensors_;
};

// Bytes per value of the loadable dtypes (0 for kOther).
int64_t element_bytes(SafetensorsDType dtype);

}  // namespace lightserve::model
