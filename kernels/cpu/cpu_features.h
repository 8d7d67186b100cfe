// What the CPU we run on can do, read once at start-up (never assumed at compile time: shipped
// builds carry no -march=native).
#pragma once

#include <string>

namespace lightserve::kernels::cpu {

struct CpuFeatures {
  bool avx2 = false;    // with FMA and F16C
  bool avx512 = false;  // F, BW, VL, DQ
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;
  bool amx_int8 = false;  // usable: the OS granted the tile state
  bool amx_bf16 = false;

  static CpuFeatures detect();
  // Forces a lower level ("scalar", "avx2", "avx512"), for tests of every path on one machine.
  CpuFeatures limited_to(const std::string& level) const;
  std::string describe() const;  // "avx2 avx512 avx512-vnni amx"
};

}  // namespace lightserve::kernels::cpu
