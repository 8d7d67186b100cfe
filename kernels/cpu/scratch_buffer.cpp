#include "kernels/cpu/scratch_buffer.h"

#include <cstdlib>
#include <new>

namespace lightserve::kernels::cpu {

ScratchBuffer::~ScratchBuffer() {
  std::free(data_);
}

void* ScratchBuffer::reserve(size_t bytes) {
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  constexpr size_t kAlign = 64;
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* fresh = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (fresh == nullptr) throw std::bad_alloc();
  std::free(data_);
  data_ = fresh;
  capacity_ = rounded == 0 ? kAlign : rounded;
  return data_;
}

}  // namespace lightserve::kernels::cpu
