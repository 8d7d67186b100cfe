// GGUF reader. The file is untrusted: every length, count, dimension and offset is checked against
// the bytes that remain before it is used, with overflow-safe arithmetic, so a corrupt or hostile
// file yields an Error naming the problem and never a crash, an out-of-bounds read or a
// gigabyte allocation.
#include "model/gguf.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "model/mapped_file.h"

namespace lightserve::model {

static_assert(std::endian::native == std::endian::little, "GGUF is read in place: little-endian");

namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;
// Arrays can nest; a few levels are plenty for real files, and the bound keeps a hostile file
// of nested array headers from overflowing the stack.
constexpr int kMaxArrayDepth = 8;
// Every parsed value costs ~48 bytes of memory however small it is in the file (one byte for a
// u8), so the total is capped: real tokenizers hold ~1M values, this allows 8x that.
constexpr uint64_t kMaxMetadataValues = uint64_t{1} << 23;

// Smallest number of bytes one value of `type` occupies in the file, used to bound array counts
// by the bytes that remain. 0 for an unknown type.
uint64_t min_encoded_size(uint32_t type) {
  switch (static_cast<GgufValueType>(type)) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
    case GgufValueType::kString:  // u64 length
      return 8;
    case GgufValueType::kArray:  // u32 element type + u64 count
      return 12;
  }
  return 0;
}

// 'PK\x03\x04' style rendering of the first bytes, for "not a GGUF file" errors.
std::string quote_magic(std::span<const uint8_t> magic) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (uint8_t c : magic) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out + "'";
}

// Sequential little-endian reads over the file. A read that would run past the end fails and
// records the byte it would have ended at, so the caller can say what was truncated and where.
// Other problems are recorded in `problem`. After the first failure every read fails.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  uint64_t position() const { return position_; }
  uint64_t remaining() const { return bytes_.size() - position_; }
  bool failed() const { return truncated_at_ != 0 || !problem_.empty(); }
  // Non-zero when the failure was a read past the end: the byte that read would have ended at.
  uint64_t truncated_at() const { return truncated_at_; }
  const std::string& problem() const { return problem_; }

  bool fail(std::string problem) {
    if (!failed()) problem_ = std::move(problem);
    return false;
  }

  bool read_bytes(void* out, uint64_t count) {
    if (failed()) return false;
    if (count > remaining()) return fail_truncated(count);
    if (count) std::memcpy(out, bytes_.data() + position_, count);
    position_ += count;
    return true;
  }

  // Records that `count` more bytes were needed than remain. The count comes from the file and
  // may be absurd, so the end position saturates instead of wrapping.
  bool fail_truncated(uint64_t count) {
    if (failed()) return false;
    const uint64_t max = std::numeric_limits<uint64_t>::max();
    truncated_at_ = count > max - position_ ? max : position_ + count;
    return false;
  }

  template <typename T>
  bool read(T* out) {
    return read_bytes(out, sizeof(T));
  }

  bool read_string(std::string* out) {
    uint64_t length = 0;
    if (!read(&length)) return false;
    // Checked before assign(): the length may be absurd.
    if (length > remaining()) return fail_truncated(length);
    out->assign(reinterpret_cast<const char*>(bytes_.data() + position_), length);
    position_ += length;
    return true;
  }

 private:
  std::span<const uint8_t> bytes_;
  uint64_t position_ = 0;
  uint64_t truncated_at_ = 0;
  std::string problem_;
};

// Parses metadata values, counting them against kMaxMetadataValues.
class ValueParser {
 public:
  explicit ValueParser(Cursor& cursor) : cursor_(cursor) {}

  bool parse(uint32_t type, GgufValue* out, int depth) {
    if (num_values_ >= kMaxMetadataValues) return fail_too_many_values();
    ++num_values_;
    if (min_encoded_size(type) == 0) {
      return cursor_.fail("unknown value type " + std::to_string(type));
    }
    out->type = static_cast<GgufValueType>(type);
    switch (out->type) {
      case GgufValueType::kU8:
        return parse_scalar<uint8_t, uint64_t>(out);
      case GgufValueType::kI8:
        return parse_scalar<int8_t, int64_t>(out);
      case GgufValueType::kU16:
        return parse_scalar<uint16_t, uint64_t>(out);
      case GgufValueType::kI16:
        return parse_scalar<int16_t, int64_t>(out);
      case GgufValueType::kU32:
        return parse_scalar<uint32_t, uint64_t>(out);
      case GgufValueType::kI32:
        return parse_scalar<int32_t, int64_t>(out);
      case GgufValueType::kU64:
        return parse_scalar<uint64_t, uint64_t>(out);
      case GgufValueType::kI64:
        return parse_scalar<int64_t, int64_t>(out);
      case GgufValueType::kF32:
        return parse_scalar<float, double>(out);
      case GgufValueType::kF64:
        return parse_scalar<double, double>(out);
      case GgufValueType::kBool: {
        uint8_t b = 0;
        if (!cursor_.read(&b)) return false;
        if (b > 1) return cursor_.fail("bool value is " + std::to_string(b) + ", not 0 or 1");
        out->data = b == 1;
        return true;
      }
      case GgufValueType::kString: {
        std::string s;
        if (!cursor_.read_string(&s)) return false;
        out->data = std::move(s);
        return true;
      }
      case GgufValueType::kArray:
        return parse_array(out, depth);
    }
    return false;  // unreachable: min_encoded_size rejected unknown types
  }

 private:
  bool fail_too_many_values() {
    return cursor_.fail("metadata holds more than " + std::to_string(kMaxMetadataValues) +
                        " values in all, which lightserve refuses");
  }

  template <typename FileType, typename StoredType>
  bool parse_scalar(GgufValue* out) {
    FileType v{};
    if (!cursor_.read(&v)) return false;
    out->data = static_cast<StoredType>(v);
    return true;
  }

  bool parse_array(GgufValue* out, int depth) {
    if (depth >= kMaxArrayDepth) {
      return cursor_.fail("arrays nested more than " + std::to_string(kMaxArrayDepth) +
                          " levels deep");
    }
    uint32_t element_type = 0;
    uint64_t count = 0;
    if (!cursor_.read(&element_type) || !cursor_.read(&count)) return false;
    const uint64_t element_size = min_encoded_size(element_type);
    if (element_size == 0) {
      return cursor_.fail("array of unknown value type " + std::to_string(element_type));
    }
    // Each element needs at least element_size bytes, so a count the file cannot hold is
    // truncation; checking before reserve() keeps a huge count from allocating.
    if (count > cursor_.remaining() / element_size) {
      const uint64_t max = std::numeric_limits<uint64_t>::max();
      return cursor_.fail_truncated(count > max / element_size ? max : count * element_size);
    }
    if (count > kMaxMetadataValues - num_values_) return fail_too_many_values();
    GgufArray array;
    array.element_type = static_cast<GgufValueType>(element_type);
    array.values.resize(count);
    for (auto& value : array.values) {
      if (!parse(element_type, &value, depth + 1)) return false;
    }
    out->data = std::move(array);
    return true;
  }

  Cursor& cursor_;
  uint64_t num_values_ = 0;
};

// Typed accessors over GgufValue.
std::optional<int64_t> as_int(const GgufValue& v) {
  if (const auto* u = std::get_if<uint64_t>(&v.data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v.data)) return *i;
  return std::nullopt;
}

bool is_integer(const GgufValue& v) {
  return std::holds_alternative<uint64_t>(v.data) || std::holds_alternative<int64_t>(v.data);
}

}  // namespace

std::string_view to_string(GgufValueType type) {
  switch (type) {
    case GgufValueType::kU8:
      return "u8";
    case GgufValueType::kI8:
      return "i8";
    case GgufValueType::kU16:
      return "u16";
    case GgufValueType::kI16:
      return "i16";
    case GgufValueType::kU32:
      return "u32";
    case GgufValueType::kI32:
      return "i32";
    case GgufValueType::kF32:
      return "f32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kU64:
      return "u64";
    case GgufValueType::kI64:
      return "i64";
    case GgufValueType::kF64:
      return "f64";
  }
  return "unknown";
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) detail::unmap_file(bytes_);
}

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  auto mapped = detail::map_file(path);
  if (!mapped) return mapped.error();
  if (mapped.value().empty()) return Error{path + ": empty file, not a GGUF model"};
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->mapping_ = const_cast<uint8_t*>(mapped.value().data());
  file->bytes_ = mapped.value();
  if (Status status = file->parse_all(); !status.ok()) return Error{status.message()};
  return file;
}

Result<std::unique_ptr<GgufFile>> GgufFile::parse(std::span<const uint8_t> bytes,
                                                  std::string name) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = std::move(name);
  file->bytes_ = bytes;
  if (Status status = file->parse_all(); !status.ok()) return Error{status.message()};
  return file;
}

Result<std::unique_ptr<GgufFile>> GgufFile::synthesize(
    std::string name, std::map<std::string, GgufValue, std::less<>> metadata,
    std::vector<GgufTensorInfo> tensors, const FillFn& fill) {
  constexpr uint64_t kAlignment = 32;
  uint64_t size = 0;
  for (GgufTensorInfo& info : tensors) {
    int64_t elements = 1;
    for (int64_t d : info.dims) {
      if (d <= 0 || __builtin_mul_overflow(elements, d, &elements)) {
        return Error{name + ": tensor " + info.name + " has shape " + format_dims(info.dims)};
      }
    }
    const auto row = info.dims.empty() ? std::nullopt : kernels::row_bytes(info.type, info.dims[0]);
    if (!row) {
      return Error{name + ": tensor " + info.name + " rows of " + format_dims(info.dims) +
                   " are not a whole number of " + std::string(kernels::traits(info.type).name) +
                   " blocks"};
    }
    info.num_elements = elements;
    info.num_bytes = *row * (elements / info.dims[0]);
    info.offset = (size + kAlignment - 1) / kAlignment * kAlignment;
    size = info.offset + static_cast<uint64_t>(info.num_bytes);
  }
  size = std::max<uint64_t>(size, 1);
  void* mapping = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping == MAP_FAILED) {
    return Error{name + ": cannot reserve " + std::to_string(size) +
                 " bytes of memory for the weights: " + std::strerror(errno)};
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = std::move(name);
  file->mapping_ = mapping;
  file->bytes_ = {static_cast<const uint8_t*>(mapping), size};
  file->version_ = 3;
  file->metadata_ = std::move(metadata);
  for (GgufTensorInfo& info : tensors) {
    if (fill) fill(info, static_cast<uint8_t*>(mapping) + info.offset);
    if (!file->tensor_index_.emplace(info.name, file->tensors_.size()).second) {
      return Error{file->path_ + ": duplicate tensor name " + info.name};
    }
    file->tensors_.push_back(std::move(info));
  }
  mprotect(mapping, size, PROT_READ);
  return file;
}

Status GgufFile::parse_all() {
  const uint64_t file_size = bytes_.size();
  Cursor cursor(bytes_);
  // Builds the error for whatever `cursor` failed on while reading `what`.
  auto cursor_error = [&](const std::string& what) -> Error {
    if (cursor.truncated_at() != 0) {
      return Error{path_ + ": truncated: " + what + " ends at byte " +
                   std::to_string(cursor.truncated_at()) + " past end of file (" +
                   std::to_string(file_size) + " bytes)"};
    }
    return Error{path_ + ": " + what + ": " + cursor.problem()};
  };

  if (file_size == 0) return Error{path_ + ": empty file, not a GGUF model"};
  if (file_size < 4 || std::memcmp(bytes_.data(), "GGUF", 4) != 0) {
    return Error{path_ + ": not a GGUF file (magic " +
                 quote_magic(bytes_.first(std::min<uint64_t>(4, file_size))) +
                 ", expected 'GGUF')"};
  }
  uint8_t magic[4];
  (void)cursor.read(&magic);
  uint32_t version = 0;
  uint64_t num_tensors = 0;
  uint64_t num_metadata = 0;
  if (!cursor.read(&version)) return cursor_error("header");
  if (version == 1) return Error{path_ + ": GGUF version 1 is not supported (only 2 and 3)"};
  if (version != 2 && version != 3) {
    // A big-endian file shows its version byte-swapped.
    const bool swapped = __builtin_bswap32(version) == 2 || __builtin_bswap32(version) == 3;
    return Error{path_ + ": GGUF version " + std::to_string(version) + " is not supported" +
                 (swapped ? " (this looks like a big-endian GGUF file; only little-endian is)"
                          : " (only 2 and 3)")};
  }
  version_ = version;
  if (!cursor.read(&num_tensors) || !cursor.read(&num_metadata)) return cursor_error("header");

  // Each key-value pair takes at least 13 bytes (empty key, type, one-byte value) and each tensor
  // info at least 24 (empty name, n_dims, type, offset; dims come on top). Counts the file cannot
  // hold are reported as truncation before anything is allocated for them.
  const uint64_t min_header = 24;  // magic, version and the two counts
  if (num_metadata > (file_size - min_header) / 13) {
    return Error{path_ + ": truncated: header claims " + std::to_string(num_metadata) +
                 " metadata keys, more than the " + std::to_string(file_size) +
                 "-byte file can hold"};
  }
  if (num_tensors > (file_size - min_header) / 24) {
    return Error{path_ + ": truncated: header claims " + std::to_string(num_tensors) +
                 " tensors, more than the " + std::to_string(file_size) + "-byte file can hold"};
  }

  ValueParser values(cursor);
  for (uint64_t i = 0; i < num_metadata; ++i) {
    const std::string what =
        "metadata key " + std::to_string(i + 1) + " of " + std::to_string(num_metadata);
    std::string key;
    uint32_t type = 0;
    GgufValue value;
    if (!cursor.read_string(&key) || !cursor.read(&type)) return cursor_error(what);
    if (!values.parse(type, &value, 0)) return cursor_error(what + " (" + key + ")");
    if (metadata_.contains(key)) return Error{path_ + ": " + what + ": duplicate key " + key};
    metadata_.emplace(std::move(key), std::move(value));
  }

  uint64_t alignment = kDefaultAlignment;
  if (const GgufValue* v = find("general.alignment")) {
    const std::optional<int64_t> a = as_int(*v);
    if (!a || *a <= 0 || !std::has_single_bit(static_cast<uint64_t>(*a)) ||
        *a > (int64_t{1} << 30)) {
      return Error{path_ + ": general.alignment must be a power of two between 1 and 2^30"};
    }
    alignment = static_cast<uint64_t>(*a);
  }

  // num_tensors is bounded by the file size, but a large file could still claim millions.
  tensors_.reserve(std::min<uint64_t>(num_tensors, 4096));
  for (uint64_t i = 0; i < num_tensors; ++i) {
    const std::string what =
        "tensor info " + std::to_string(i + 1) + " of " + std::to_string(num_tensors);
    GgufTensorInfo info;
    uint32_t num_dims = 0;
    if (!cursor.read_string(&info.name) || !cursor.read(&num_dims)) return cursor_error(what);
    const std::string tensor = "tensor " + info.name;
    if (num_dims == 0 || num_dims > kMaxDims) {
      return Error{path_ + ": " + tensor + " has " + std::to_string(num_dims) +
                   " dimensions; lightserve supports 1 to " + std::to_string(kMaxDims)};
    }
    int64_t num_elements = 1;
    for (uint32_t d = 0; d < num_dims; ++d) {
      uint64_t dim = 0;
      if (!cursor.read(&dim)) return cursor_error(what + " (" + info.name + ")");
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error{path_ + ": " + tensor + " has invalid dimension " + std::to_string(d) + " = " +
                     std::to_string(dim)};
      }
      info.dims.push_back(static_cast<int64_t>(dim));
      if (__builtin_mul_overflow(num_elements, static_cast<int64_t>(dim), &num_elements)) {
        return Error{path_ + ": " + tensor + " dimensions overflow: element count of shape " +
                     format_dims(info.dims) + "... exceeds 2^63"};
      }
    }
    uint32_t type_id = 0;
    if (!cursor.read(&type_id) || !cursor.read(&info.offset)) {
      return cursor_error(what + " (" + info.name + ")");
    }
    const std::optional<kernels::DTypeTraits> traits = kernels::dtype_traits(type_id);
    if (!traits) {
      const std::string_view type_name = kernels::ggml_type_name(type_id);
      const std::string described = type_name == "unknown type"
                                        ? "unknown type id " + std::to_string(type_id)
                                        : "type " + std::string(type_name);
      std::string supported;
      for (uint32_t id = 0; id < 64; ++id) {
        if (const auto t = kernels::dtype_traits(id)) {
          supported.append(supported.empty() ? "" : ", ").append(t->name);
        }
      }
      return Error{path_ + ": " + tensor + " has " + described +
                   ", which lightserve does not support (supported: " + supported + ")"};
    }
    info.type = traits->type;
    const std::optional<int64_t> row = kernels::row_bytes(info.type, info.dims[0]);
    if (!row) {
      return Error{path_ + ": " + tensor + " rows of " + std::to_string(info.dims[0]) +
                   " values are not a whole number of " + std::string(traits->name) + " blocks (" +
                   std::to_string(traits->block_elements) + " values each)"};
    }
    int64_t num_bytes = 0;
    if (__builtin_mul_overflow(*row, num_elements / info.dims[0], &num_bytes)) {
      return Error{path_ + ": " + tensor + " of shape " + format_dims(info.dims) +
                   " is too large: its byte size overflows"};
    }
    if (info.offset % alignment != 0) {
      return Error{path_ + ": " + tensor + " data offset " + std::to_string(info.offset) +
                   " is not a multiple of the alignment " + std::to_string(alignment)};
    }
    info.num_elements = num_elements;
    info.num_bytes = num_bytes;
    if (!tensor_index_.emplace(info.name, tensors_.size()).second) {
      return Error{path_ + ": duplicate tensor name " + info.name + " (" + what + ")"};
    }
    tensors_.push_back(std::move(info));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  const uint64_t header_end = cursor.position();
  const uint64_t padding = (alignment - header_end % alignment) % alignment;
  data_offset_ = header_end + padding;  // header_end <= file_size, padding < 2^30: no overflow
  const uint64_t data_size = data_offset_ <= file_size ? file_size - data_offset_ : 0;
  for (const GgufTensorInfo& info : tensors_) {
    const auto num_bytes = static_cast<uint64_t>(info.num_bytes);
    if (info.offset > data_size || num_bytes > data_size - info.offset) {
      // offset + num_bytes + data_offset_ may overflow for a hostile offset: saturate.
      uint64_t end = 0;
      if (__builtin_add_overflow(data_offset_, info.offset, &end) ||
          __builtin_add_overflow(end, num_bytes, &end)) {
        end = std::numeric_limits<uint64_t>::max();
      }
      return Error{path_ + ": truncated: tensor " + info.name + " data (offset " +
                   std::to_string(info.offset) + ", " + std::to_string(num_bytes) +
                   " bytes) ends at byte " + std::to_string(end) + " past end of file (" +
                   std::to_string(file_size) + " bytes)"};
    }
  }
  return Status::Ok();
}

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {
Error wrong_type(const std::string& path, std::string_view key, const GgufValue& v,
                 std::string_view expected) {
  std::string actual(to_string(v.type));
  if (const auto* array = std::get_if<GgufArray>(&v.data)) {
    actual += " of " + std::string(to_string(array->element_type));
  }
  return Error{path + ": metadata key " + std::string(key) + " is " + actual + ", expected " +
               std::string(expected)};
}
}  // namespace

Result<std::optional<int64_t>> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::optional<int64_t>();
  if (!is_integer(*v)) return wrong_type(path_, key, *v, "an integer");
  const std::optional<int64_t> i = as_int(*v);
  if (!i) {
    return Error{path_ + ": metadata key " + std::string(key) + " value " +
                 std::to_string(std::get<uint64_t>(v->data)) + " does not fit in 64-bit signed"};
  }
  return i;
}

Result<std::optional<double>> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::optional<double>();
  if (const auto* d = std::get_if<double>(&v->data)) return std::optional<double>(*d);
  if (const auto* u = std::get_if<uint64_t>(&v->data)) {
    return std::optional<double>(static_cast<double>(*u));
  }
  if (const auto* i = std::get_if<int64_t>(&v->data)) {
    return std::optional<double>(static_cast<double>(*i));
  }
  return wrong_type(path_, key, *v, "a number");
}

Result<std::optional<bool>> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::optional<bool>();
  if (const auto* b = std::get_if<bool>(&v->data)) return std::optional<bool>(*b);
  return wrong_type(path_, key, *v, "a bool");
}

Result<std::optional<std::string>> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::optional<std::string>();
  if (const auto* s = std::get_if<std::string>(&v->data)) return std::optional<std::string>(*s);
  return wrong_type(path_, key, *v, "a string");
}

Result<std::optional<std::vector<std::string>>> GgufFile::get_string_array(
    std::string_view key) const {
  using Out = std::optional<std::vector<std::string>>;
  const GgufValue* v = find(key);
  if (v == nullptr) return Out();
  const auto* array = std::get_if<GgufArray>(&v->data);
  if (array == nullptr || array->element_type != GgufValueType::kString) {
    return wrong_type(path_, key, *v, "an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(array->values.size());
  for (const GgufValue& element : array->values) out.push_back(std::get<std::string>(element.data));
  return Out(std::move(out));
}

Result<std::optional<std::vector<int64_t>>> GgufFile::get_int_array(std::string_view key) const {
  using Out = std::optional<std::vector<int64_t>>;
  const GgufValue* v = find(key);
  if (v == nullptr) return Out();
  const auto* array = std::get_if<GgufArray>(&v->data);
  const bool integers =
      array != nullptr && array->element_type != GgufValueType::kF32 &&
      array->element_type != GgufValueType::kF64 && array->element_type != GgufValueType::kBool &&
      array->element_type != GgufValueType::kString && array->element_type != GgufValueType::kArray;
  if (!integers) return wrong_type(path_, key, *v, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(array->values.size());
  for (size_t i = 0; i < array->values.size(); ++i) {
    const std::optional<int64_t> element = as_int(array->values[i]);
    if (!element) {
      return Error{path_ + ": metadata key " + std::string(key) + " element " + std::to_string(i) +
                   " does not fit in 64-bit signed"};
    }
    out.push_back(*element);
  }
  return Out(std::move(out));
}

const GgufTensorInfo* GgufFile::tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* GgufFile::tensor_data(const GgufTensorInfo& info) const {
  // parse_all() checked that [data_offset_ + offset, + num_bytes) lies inside the file.
  return bytes_.data() + data_offset_ + info.offset;
}

void GgufFile::prefault(const ProgressFn& progress) const {
  const uint64_t total = data_offset_ < bytes_.size() ? bytes_.size() - data_offset_ : 0;
  const long page_size_or_error = sysconf(_SC_PAGESIZE);
  const uint64_t page = page_size_or_error > 0 ? static_cast<uint64_t>(page_size_or_error) : 4096;
  const uint64_t report_every = std::max<uint64_t>(total / 100, 1);  // ~1% steps
  const volatile uint8_t* data = bytes_.data() + data_offset_;
  uint64_t next_report = 0;
  uint8_t sink = 0;
  for (uint64_t done = 0; done < total; done += page) {
    sink ^= data[done];  // volatile read: the compiler must fault the page in
    if (progress && done >= next_report) {
      progress(done, total);
      next_report = done + report_every;
    }
  }
  (void)sink;
  if (progress) progress(total, total);
}

std::string format_dims(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(dims[i]);
  }
  return out + "]";
}

void GgufFile::release_pages(const GgufTensorInfo& info) const {
  if (mapping_ == nullptr) return;
  const long page_size_or_error = sysconf(_SC_PAGESIZE);
  const uint64_t page = page_size_or_error > 0 ? static_cast<uint64_t>(page_size_or_error) : 4096;
  const uint64_t start = data_offset_ + info.offset;
  const uint64_t end = start + static_cast<uint64_t>(info.num_bytes);
  const uint64_t first = (start + page - 1) / page * page;  // whole pages only: neighbours stay
  const uint64_t last = end / page * page;
  if (first >= last || last > bytes_.size()) return;
  madvise(const_cast<uint8_t*>(bytes_.data()) + first, last - first, MADV_DONTNEED);
}

}  // namespace lightserve::model
