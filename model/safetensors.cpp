// safetensors header parsing and validation (safetensors.h).
#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "model/mapped_file.h"

namespace lightserve::model {
namespace {

// The reference implementation refuses headers above 100 MB; so do we (a corrupt length must
// not make us parse gigabytes).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr int64_t kMaxElements = int64_t{1} << 40;

SafetensorsDType dtype_of(std::string_view name) {
  if (name == "F32") return SafetensorsDType::kF32;
  if (name == "F16") return SafetensorsDType::kF16;
  if (name == "BF16") return SafetensorsDType::kBF16;
  return SafetensorsDType::kOther;
}

}  // namespace

int64_t element_bytes(SafetensorsDType dtype) {
  switch (dtype) {
    case SafetensorsDType::kF32:
      return 4;
    case SafetensorsDType::kF16:
    case SafetensorsDType::kBF16:
      return 2;
    case SafetensorsDType::kOther:
      break;
  }
  return 0;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) detail::unmap_file(bytes_);
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  auto mapped = detail::map_file(path);
  if (!mapped) return mapped.error();
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapped.value().empty() ? nullptr : const_cast<uint8_t*>(mapped.value().data());
  file->bytes_ = mapped.value();
  if (file->bytes_.size() < 8) {
    return Error{path + ": truncated: " + std::to_string(file->bytes_.size()) +
                 " bytes, less than the 8-byte header length of a safetensors file"};
  }
  if (Status status = file->parse_header(); !status) return Error{status.message()};
  return file;
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::parse(std::span<const uint8_t> bytes,
                                                                std::string name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  file->bytes_ = bytes;
  if (Status status = file->parse_header(); !status) return Error{status.message()};
  return file;
}

Status SafetensorsFile::parse_header() {
  const uint64_t file_size = bytes_.size();
  if (file_size < 8) {
    return Error{path_ + ": truncated: " + std::to_string(file_size) +
                 " bytes, less than the 8-byte header length of a safetensors file"};
  }
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes_.data(), 8);  // little-endian, as every host we build for
  if (header_bytes > kMaxHeaderBytes) {
    return Error{path_ + ": header length " + std::to_string(header_bytes) +
                 " is over 100 MB; not a safetensors file"};
  }
  if (header_bytes > file_size - 8) {
    return Error{path_ + ": truncated: the header says " + std::to_string(header_bytes) +
                 " bytes but the file has " + std::to_string(file_size - 8) + " after the length"};
  }
  const auto* header_begin = reinterpret_cast<const char*>(bytes_.data() + 8);
  const nlohmann::json header =
      nlohmann::json::parse(header_begin, header_begin + header_bytes, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return Error{path_ + ": the header is not a JSON object (corrupt or not a safetensors file)"};
  }
  const uint64_t data_begin = 8 + header_bytes;
  const uint64_t data_size = file_size - data_begin;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = path_ + ": tensor " + name;
    if (!entry.is_object()) return Error{where + ": header entry is not an object"};
    const auto dtype = entry.find("dtype");
    const auto shape = entry.find("shape");
    const auto offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) return Error{where + ": no dtype string"};
    if (shape == entry.end() || !shape->is_array()) return Error{where + ": no shape array"};
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      return Error{where + ": data_offsets is not a pair of unsigned integers"};
    }
    SafetensorsTensor tensor;
    tensor.name = name;
    tensor.dtype_name = dtype->get<std::string>();
    tensor.dtype = dtype_of(tensor.dtype_name);
    int64_t elements = 1;
    for (const auto& dim : *shape) {
      if (!dim.is_number_unsigned()) return Error{where + ": shape holds a non-integer"};
      const uint64_t d = dim.get<uint64_t>();
      if (d > static_cast<uint64_t>(kMaxElements) ||
          __builtin_mul_overflow(elements, static_cast<int64_t>(d), &elements) ||
          elements > kMaxElements) {
        return Error{where + ": shape is too large"};
      }
      tensor.shape.push_back(static_cast<int64_t>(d));
    }
    tensor.num_elements = elements;
    const uint64_t begin = (*offsets)[0].get<uint64_t>();
    const uint64_t end = (*offsets)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return Error{where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                   ") lie outside the " + std::to_string(data_size) +
                   " data bytes (truncated file?)"};
    }
    if (tensor.dtype != SafetensorsDType::kOther &&
        end - begin != static_cast<uint64_t>(elements * element_bytes(tensor.dtype))) {
      return Error{where + ": " + std::to_string(end - begin) + " data bytes for " +
                   std::to_string(elements) + " " + tensor.dtype_name + " values"};
    }
    tensor.data = bytes_.subspan(data_begin + begin, end - begin);
    tensors_.push_back(std::move(tensor));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.name < b.name; });
  return Status::Ok();
}

}  // namespace lightserve::model
