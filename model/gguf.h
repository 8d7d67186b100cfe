// GGUF v2/v3 reader (llama.cpp's model format). The file is memory-mapped; metadata is parsed
// into values, tensor infos are validated against the file (type, dims, offsets, alignment, size),
// and tensor data is read in place. Every problem with an untrusted file becomes an Error naming
// it; nothing here aborts or reads out of bounds.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/status.h"
#include "kernels/dtype.h"

namespace lightserve::model {

// GGUF metadata value types, numbered as in the file.
enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view to_string(GgufValueType type);

struct GgufValue;
struct GgufArray {
  GgufValueType element_type = GgufValueType::kU8;
  std::vector<GgufValue> values;
};
struct GgufValue {
  GgufValueType type = GgufValueType::kU8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> data;
  // Integers widen to uint64_t (unsigned types) or int64_t (signed), floats to double.
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the contiguous axis
  kernels::DType type = kernels::DType::kF32;
  uint64_t offset = 0;  // from the start of the data section
  int64_t num_elements = 0;
  int64_t num_bytes = 0;
};

// "[576, 49152]": tensor dims for error messages.
std::string format_dims(const std::vector<int64_t>& dims);

// Called while loading with (bytes done, bytes total).
using ProgressFn = std::function<void(uint64_t, uint64_t)>;

class GgufFile {
 public:
  // Maps and validates `path`. Errors name the file and the problem ("truncated: tensor info 12
  // of 272 ends past end of file", "tensor blk.0.attn_q.weight: type Q6_K is not supported").
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path);
  // Same checks over bytes already in memory (used by the fuzzer); `bytes` must outlive the file.
  static Result<std::unique_ptr<GgufFile>> parse(std::span<const uint8_t> bytes,
                                                 std::string name = "<memory>");
  // A file made in memory rather than read: `tensors` (name, dims, type; offsets are assigned)
  // laid out with 32-byte alignment in an anonymous mapping that `fill` writes, once per tensor,
  // before the mapping turns read-only. Shapes and types are checked as open() checks a file's.
  // For dummy weights (model_source.h); pages `fill` never touches cost no memory.
  using FillFn = std::function<void(const GgufTensorInfo&, uint8_t* data)>;
  static Result<std::unique_ptr<GgufFile>> synthesize(
      std::string name, std::map<std::string, GgufValue, std::less<>> metadata,
      std::vector<GgufTensorInfo> tensors, const FillFn& fill);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return bytes_.size(); }

  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;

  // Typed lookups: nullopt when the key is absent; an Error when present with the wrong type.
  Result<std::optional<int64_t>> get_int(std::string_view key) const;   // any integer type
  Result<std::optional<double>> get_float(std::string_view key) const;  // f32/f64 or integer
  Result<std::optional<bool>> get_bool(std::string_view key) const;
  Result<std::optional<std::string>> get_string(std::string_view key) const;
  Result<std::optional<std::vector<std::string>>> get_string_array(std::string_view key) const;
  Result<std::optional<std::vector<int64_t>>> get_int_array(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* tensor(std::string_view name) const;
  const uint8_t* tensor_data(const GgufTensorInfo& info) const;

  // Touches every tensor page once (so the first request does not pay for page faults),
  // reporting progress.
  void prefault(const ProgressFn& progress) const;

  // Tells the kernel the pages lying wholly inside this tensor's data are no longer needed (a
  // backend copied the weight into its own form), so they stop counting as resident; they are
  // re-read from the file if touched again. A no-op for files parsed from memory.
  void release_pages(const GgufTensorInfo& info) const;

 private:
  GgufFile() = default;
  Status parse_all();

  std::string path_;
  std::span<const uint8_t> bytes_;
  void* mapping_ = nullptr;  // non-null when we own an mmap of bytes_
  uint32_t version_ = 0;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace lightserve::model
