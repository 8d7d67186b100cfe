// The KV cache's 16-bit element types on the device (AttentionShape::kv_type, kernels/dtype.h):
// f16 or bf16, passed to kernels as a runtime flag (a uniform branch), with the CPU's rounding
// (kernels::fp32_to_fp16 / fp32_to_bf16), so both backends store the same bits.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace lightserve::kernels::cuda {

// bf16 bits of x, round to nearest even; subnormals to a zero of their sign, NaN stays quiet
// (as vcvtneps2bf16 and kernels::fp32_to_bf16).
__device__ __forceinline__ uint16_t float_to_bf16_bits(float x) {
  const uint32_t u = __float_as_uint(x);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  if (abs < 0x00800000u) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ uint16_t float_to_kv_bits(float x, bool bf16) {
  return bf16 ? float_to_bf16_bits(x) : __half_as_ushort(__float2half_rn(x));
}

// The low 16 bits of `bits` as a cached value.
__device__ __forceinline__ float kv_bits_to_float(uint32_t bits, bool bf16) {
  return bf16 ? __uint_as_float((bits & 0xffffu) << 16)
              : __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
}

// x rounded to the cache type, as the CPU rounds queries (and probabilities) to it.
__device__ __forceinline__ float round_to_kv(float x, bool bf16) {
  return kv_bits_to_float(float_to_kv_bits(x, bf16), bf16);
}

}  // namespace lightserve::kernels::cuda
