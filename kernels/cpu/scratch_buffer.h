// Scratch memory for the ISA-specific kernel files (*_avx2.cpp, *_avx512*.cpp, *_amx.cpp and
// the .inc files they include).
//
// Why not std::vector there: a std::vector<float>::resize or assign instantiated in a file built
// with -mavx512f is a weak symbol, and the linker keeps one copy of it for the whole program. In
// a build that does not inline it (sanitizers, -O1) the copy kept may be the AVX-512 one, and
// code that runs on any CPU would then execute AVX-512 instructions (ctest kernels.isa_objects,
// scripts/check_isa_objects.py, checks every weak symbol of those objects). ScratchBuffer grows
// in scratch_buffer.cpp, which is compiled for the x86-64 baseline, and hands out plain pointers.
#pragma once

#include <cstddef>

namespace lightserve::kernels::cpu {

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // At least `bytes` bytes, 64-byte aligned. Allocates only when a call needs more than any
  // before it; what the buffer held is then lost (scratch, not storage). Throws std::bad_alloc.
  void* reserve(size_t bytes);

  template <typename T>
  T* get(size_t count) {
    return static_cast<T*>(reserve(count * sizeof(T)));
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace lightserve::kernels::cpu
