#include "kernels/cpu/cpu_features.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace lightserve::kernels::cpu {
namespace {

#if defined(__x86_64__)
struct CpuidRegs {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(uint32_t leaf, uint32_t subleaf) {
  CpuidRegs r;
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
  return r;
}

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool bit(uint32_t value, int index) {
  return (value >> index) & 1u;
}

// Linux keeps the 8 KiB AMX tile state off until a process asks for it.
bool request_amx_permission() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

}  // namespace

CpuFeatures CpuFeatures::detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  const uint32_t max_leaf = cpuid(0, 0).eax;
  if (max_leaf < 7) return f;
  const CpuidRegs l1 = cpuid(1, 0);
  const CpuidRegs l7 = cpuid(7, 0);
  const CpuidRegs l7_1 = cpuid(7, 1);
  const bool osxsave = bit(l1.ecx, 27);
  if (!osxsave) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;                 // XMM and YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;         // XTILECFG and XTILEDATA

  const bool fma = bit(l1.ecx, 12), f16c = bit(l1.ecx, 29), avx = bit(l1.ecx, 28);
  f.avx2 = os_avx && avx && fma && f16c && bit(l7.ebx, 5);
  f.avx512 = f.avx2 && os_avx512 && bit(l7.ebx, 16) /*F*/ && bit(l7.ebx, 17) /*DQ*/ &&
             bit(l7.ebx, 30) /*BW*/ && bit(l7.ebx, 31) /*VL*/;
  f.avx512_vnni = f.avx512 && bit(l7.ecx, 11);
  f.avx512_bf16 = f.avx512 && bit(l7_1.eax, 5);
  f.avx_vnni = f.avx2 && bit(l7_1.eax, 4);
  const bool amx_tile = bit(l7.edx, 24);
  if (f.avx512 && os_amx && amx_tile && (bit(l7.edx, 25) || bit(l7.edx, 22)) &&
      request_amx_permission()) {
    f.amx_int8 = bit(l7.edx, 25);
    f.amx_bf16 = bit(l7.edx, 22);
  }
#endif
  if (const char* forced = std::getenv("LIGHTSERVE_ISA"); forced != nullptr && *forced != '\0') {
    f = f.limited_to(forced);
  }
  return f;
}

CpuFeatures CpuFeatures::limited_to(const std::string& level) const {
  CpuFeatures f = *this;
  if (level == "scalar") {
    f = CpuFeatures{};
  } else if (level == "avx2") {
    f.avx512 = f.avx512_vnni = f.avx512_bf16 = false;
    f.amx_int8 = f.amx_bf16 = false;
  } else if (level == "avx512") {
    f.amx_int8 = f.amx_bf16 = false;
  }
  // Anything else ("amx", "native") leaves the detected features as they are.
  return f;
}

std::string CpuFeatures::describe() const {
  std::string out;
  auto add = [&](bool on, std::string_view name) {
    if (!on) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(avx2, "avx2");
  add(avx_vnni, "avx-vnni");
  add(avx512, "avx512");
  add(avx512_vnni, "avx512-vnni");
  add(avx512_bf16, "avx512-bf16");
  add(amx_int8 || amx_bf16, "amx");
  return out.empty() ? "scalar" : out;
}

}  // namespace lightserve::kernels::cpu
