#include "model/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lightserve::model::detail {

Result<std::span<const uint8_t>> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error{"cannot open " + path + ": " + std::strerror(errno)};
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Error{"cannot stat " + path + ": " + std::strerror(err)};
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error{path + ": not a regular file"};
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return std::span<const uint8_t>();
  }
  void* mapping = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (mapping == MAP_FAILED) return Error{"cannot map " + path + ": " + std::strerror(err)};
  return std::span<const uint8_t>(static_cast<const uint8_t*>(mapping), size);
}

void unmap_file(std::span<const uint8_t> bytes) {
  if (!bytes.empty()) munmap(const_cast<uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace lightserve::model::detail
