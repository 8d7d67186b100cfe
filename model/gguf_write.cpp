// GGUF v3 writer (gguf_write.h).
#include "model/gguf_write.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

namespace lightserve::model {
namespace {

constexpr uint64_t kDefaultAlignment = 32;

class Encoder {
 public:
  template <typename T>
  void put(T value) {
    const size_t at = bytes.size();
    bytes.resize(at + sizeof(T));
    std::memcpy(bytes.data() + at, &value, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
  // The value's payload (after its type id). False when the variant does not hold what `type`
  // needs (a value built by hand with the wrong alternative).
  bool put_value(const GgufValue& v) {
    const auto* u = std::get_if<uint64_t>(&v.data);
    const auto* i = std::get_if<int64_t>(&v.data);
    const auto integer = [&](auto zero) -> bool {
      using T = decltype(zero);
      if (u != nullptr) {
        put(static_cast<T>(*u));
      } else if (i != nullptr) {
        put(static_cast<T>(*i));
      } else {
        return false;
      }
      return true;
    };
    switch (v.type) {
      case GgufValueType::kU8:
        return integer(uint8_t{});
      case GgufValueType::kI8:
        return integer(int8_t{});
      case GgufValueType::kU16:
        return integer(uint16_t{});
      case GgufValueType::kI16:
        return integer(int16_t{});
      case GgufValueType::kU32:
        return integer(uint32_t{});
      case GgufValueType::kI32:
        return integer(int32_t{});
      case GgufValueType::kU64:
        return integer(uint64_t{});
      case GgufValueType::kI64:
        return integer(int64_t{});
      case GgufValueType::kF32:
      case GgufValueType::kF64: {
        const auto* d = std::get_if<double>(&v.data);
        if (d == nullptr) return false;
        if (v.type == GgufValueType::kF32) {
          put(static_cast<float>(*d));
        } else {
          put(*d);
        }
        return true;
      }
      case GgufValueType::kBool: {
        const auto* b = std::get_if<bool>(&v.data);
        if (b == nullptr) return false;
        put<uint8_t>(*b ? 1 : 0);
        return true;
      }
      case GgufValueType::kString: {
        const auto* s = std::get_if<std::string>(&v.data);
        if (s == nullptr) return false;
        put_string(*s);
        return true;
      }
      case GgufValueType::kArray: {
        const auto* a = std::get_if<GgufArray>(&v.data);
        if (a == nullptr || a->element_type == GgufValueType::kArray) return false;
        put(static_cast<uint32_t>(a->element_type));
        put<uint64_t>(a->values.size());
        for (const GgufValue& element : a->values) {
          if (element.type != a->element_type || !put_value(element)) return false;
        }
        return true;
      }
    }
    return false;
  }

  std::vector<uint8_t> bytes;
};

std::string system_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// pwrite until done (it may write less than asked).
bool write_all(int fd, const uint8_t* data, uint64_t size, uint64_t offset) {
  while (size > 0) {
    const ssize_t n =
        pwrite(fd, data, std::min<uint64_t>(size, uint64_t{1} << 30), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

}  // namespace

Result<std::vector<uint8_t>> encode_gguf_header(
    const std::map<std::string, GgufValue, std::less<>>& metadata,
    const std::vector<GgufTensorInfo>& tensors, uint64_t alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment)) {
    return Error{"GGUF alignment " + std::to_string(alignment) + " is not a power of two"};
  }
  Encoder e;
  e.bytes = {'G', 'G', 'U', 'F'};
  e.put<uint32_t>(3);
  e.put<uint64_t>(tensors.size());
  e.put<uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    e.put_string(key);
    e.put(static_cast<uint32_t>(value.type));
    if (!e.put_value(value)) {
      return Error{"metadata key " + key + ": its value does not hold a " +
                   std::string(to_string(value.type))};
    }
  }
  for (const GgufTensorInfo& t : tensors) {
    e.put_string(t.name);
    e.put(static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) e.put(static_cast<uint64_t>(d));
    e.put(static_cast<uint32_t>(t.type));
    e.put<uint64_t>(t.offset);
  }
  e.bytes.resize((e.bytes.size() + alignment - 1) / alignment * alignment, 0);
  return std::move(e.bytes);
}

Status write_gguf(const GgufFile& file, const std::string& path, const GgufWriteOptions& options) {
  uint64_t alignment = kDefaultAlignment;
  auto declared = file.get_int("general.alignment");
  if (!declared) return Error{declared.error().message};
  if (declared.value()) alignment = static_cast<uint64_t>(*declared.value());
  auto header = encode_gguf_header(file.metadata(), file.tensors(), alignment);
  if (!header) return Error{file.path() + ": " + header.error().message};
  const uint64_t data_start = header.value().size();
  uint64_t data_size = 0, total_bytes = 0;
  for (const GgufTensorInfo& t : file.tensors()) {
    if (t.offset % alignment != 0) {
      return Error{file.path() + ": tensor " + t.name + " is at offset " +
                   std::to_string(t.offset) + ", not a multiple of the alignment " +
                   std::to_string(alignment)};
    }
    data_size = std::max(data_size, t.offset + static_cast<uint64_t>(t.num_bytes));
    total_bytes += static_cast<uint64_t>(t.num_bytes);
  }

  const std::string partial = path + ".partial";
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Error{system_error("cannot create", partial)};
  // The full size first: a disk that cannot hold it fails here, not after minutes of writing.
  if (ftruncate(fd, static_cast<off_t>(data_start + data_size)) != 0 ||
      !write_all(fd, header.value().data(), data_start, 0)) {
    const std::string message = system_error("cannot write", partial);
    ::close(fd);
    ::unlink(partial.c_str());
    return Error{message};
  }

  // Tensors go to the threads one at a time, in file order (the largest, the embeddings, first).
  std::atomic<size_t> next{0};
  std::mutex mutex;  // guards first_error, written, and calls to options.progress
  std::string first_error;
  uint64_t written = 0;
  const auto worker = [&] {
    std::vector<uint8_t> buffer;
    for (size_t i = next++; i < file.tensors().size(); i = next++) {
      const GgufTensorInfo& t = file.tensors()[i];
      const uint8_t* data = file.tensor_data(t);
      if (options.fill) {
        buffer.resize(static_cast<size_t>(t.num_bytes));
        options.fill(t, buffer.data());
        data = buffer.data();
      }
      const bool ok =
          write_all(fd, data, static_cast<uint64_t>(t.num_bytes), data_start + t.offset);
      const std::string message = ok ? "" : system_error("cannot write", partial);
      std::lock_guard lock(mutex);
      if (!ok || !first_error.empty()) {
        if (first_error.empty()) first_error = message;
        next = file.tensors().size();
        return;
      }
      written += static_cast<uint64_t>(t.num_bytes);
      if (options.progress) options.progress(written, total_bytes);
    }
  };
  const size_t num_threads =
      std::clamp<size_t>(static_cast<size_t>(std::max(options.num_threads, 1)), 1,
                         std::max<size_t>(file.tensors().size(), 1));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();

  const bool closed = ::close(fd) == 0;
  if (first_error.empty() && !closed) first_error = system_error("cannot close", partial);
  if (!first_error.empty()) {
    ::unlink(partial.c_str());
    return Error{first_error};
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const std::string message = system_error("cannot rename " + partial + " to", path);
    ::unlink(partial.c_str());
    return Error{message};
  }
  return Status::Ok();
}

}  // namespace lightserve::model
