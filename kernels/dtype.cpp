#include "kernels/dtype.h"

#include <array>
#include <bit>
#include <cstring>
#include <limits>

namespace lightserve::kernels {
namespace {

constexpr std::array<DTypeTraits, 11> kTraits = {{
    {DType::kF32, "F32", 1, 4},
    {DType::kF16, "F16", 1, 2},
    {DType::kQ4_0, "Q4_0", 32, 18},
    {DType::kQ4_1, "Q4_1", 32, 20},
    {DType::kQ5_0, "Q5_0", 32, 22},
    {DType::kQ5_1, "Q5_1", 32, 24},
    {DType::kQ8_0, "Q8_0", 32, 34},
    {DType::kQ4_K, "Q4_K", 256, 144},
    {DType::kQ5_K, "Q5_K", 256, 176},
    {DType::kQ6_K, "Q6_K", 256, 210},
    {DType::kBF16, "BF16", 1, 2},
}};

// Names of every ggml type id, so an error can say "Q6_K" rather than "type 14".
constexpr std::array<std::string_view, 40> kGgmlNames = {
    "F32",     "F16",     "Q4_0",    "Q4_1",  "type 4",  "type 5",  "Q5_0",    "Q5_1",
    "Q8_0",    "Q8_1",    "Q2_K",    "Q3_K",  "Q4_K",    "Q5_K",    "Q6_K",    "Q8_K",
    "IQ2_XXS", "IQ2_XS",  "IQ3_XXS", "IQ1_S", "IQ4_NL",  "IQ3_S",   "IQ2_S",   "IQ4_XS",
    "I8",      "I16",     "I32",     "I64",   "F64",     "IQ1_M",   "BF16",    "type 31",
    "type 32", "type 33", "TQ1_0",   "TQ2_0", "type 36", "type 37", "type 38", "MXFP4"};

}  // namespace

std::optional<DTypeTraits> dtype_traits(uint32_t ggml_type_id) {
  for (const auto& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == ggml_type_id) return t;
  }
  return std::nullopt;
}

const DTypeTraits& traits(DType type) {
  for (const auto& t : kTraits) {
    if (t.type == type) return t;
  }
  return kTraits[0];  // unreachable for a valid DType
}

std::string_view ggml_type_name(uint32_t ggml_type_id) {
  if (ggml_type_id < kGgmlNames.size()) return kGgmlNames[ggml_type_id];
  return "unknown type";
}

std::optional<int64_t> row_bytes(DType type, int64_t elements) {
  const auto& t = traits(type);
  if (elements < 0 || elements % t.block_elements != 0) return std::nullopt;
  const int64_t blocks = elements / t.block_elements;
  if (blocks > std::numeric_limits<int64_t>::max() / t.block_bytes) return std::nullopt;
  return blocks * t.block_bytes;
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mantissa & 0x3ffu) << 13;
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | mantissa << 13;
  } else {
    bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
  }
  return std::bit_cast<float>(bits);
}

uint16_t fp32_to_fp16(float f) {
  // Round to nearest even, as F16C's vcvtps2ph with rounding mode 0.
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {                                  // result is subnormal or zero
    const float magic = std::bit_cast<float>(0x3f000000u);  // 0.5: aligns to f16 subnormal ulp
    const float v = std::bit_cast<float>(abs) + magic;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(v) - 0x3f000000u));
  }
  const uint32_t mant_odd = (abs >> 13) & 1u;
  uint32_t rounded = abs + 0xfffu + mant_odd;
  rounded -= (127u - 15u) << 23;
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

namespace {

// Q4_K and Q5_K share their scale packing; `qh` is null for Q4_K.
void dequantize_q4_q5_k(uint16_t d16, uint16_t dmin16, const uint8_t* scales, const uint8_t* qs,
                        const uint8_t* qh, float* dst) {
  const float d = fp16_to_fp32(d16);
  const float dmin = fp16_to_fp32(dmin16);
  for (int chunk = 0; chunk < 4; ++chunk, qs += 32, dst += 64) {
    uint8_t sc, m;
    kquant_scale_min(2 * chunk, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    kquant_scale_min(2 * chunk + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) {
      int low = qs[l] & 0x0f, high = qs[l] >> 4;
      if (qh != nullptr) {
        low += (qh[l] >> (2 * chunk)) & 1 ? 16 : 0;
        high += (qh[l] >> (2 * chunk + 1)) & 1 ? 16 : 0;
      }
      dst[l] = d1 * static_cast<float>(low) - m1;
      dst[l + 32] = d2 * static_cast<float>(high) - m2;
    }
  }
}

}  // namespace

float bf16_to_fp32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

uint16_t fp32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);    // quiet NaN
  if (abs < 0x00800000u) return static_cast<uint16_t>((x >> 16) & 0x8000u);  // subnormal: ±0
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

bool is_kv_type(DType type) {
  return type == DType::kF16 || type == DType::kBF16;
}

std::optional<DType> parse_kv_type(std::string_view name) {
  if (name == "f16" || name == "float16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  return std::nullopt;
}

std::string_view kv_type_name(DType type) {
  return type == DType::kBF16 ? "bf16" : "f16";
}

int64_t kv_type_bytes(DType type) {
  return is_kv_type(type) ? 2 : 0;
}

void dequantize_row(DType type, const void* src, float* dst, int64_t elements) {
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(elements) * sizeof(float));
      return;
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < elements; ++i) dst[i] = fp16_to_fp32(s[i]);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < elements; ++i) dst[i] = bf16_to_fp32(s[i]);
      return;
    }
    case DType::kQ4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(src);
      for (int64_t i = 0; i < elements / kQuantBlock; ++i, dst += kQuantBlock) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < 16; ++j) {
          dst[j] = static_cast<float>((b[i].qs[j] & 0x0f) - 8) * d;
          dst[j + 16] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
        }
      }
      return;
    }
    case DType::kQ4_1: {
      const auto* b = static_cast<const BlockQ4_1*>(src);
      for (int64_t i = 0; i < elements / kQuantBlock; ++i, dst += kQuantBlock) {
        const float d = fp16_to_fp32(b[i].d);
        const float m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < 16; ++j) {
          dst[j] = static_cast<float>(b[i].qs[j] & 0x0f) * d + m;
          dst[j + 16] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
        }
      }
      return;
    }
    case DType::kQ5_0:
    case DType::kQ5_1: {
      // Both layouts end in qh[4], qs[16]; Q5_1 has the minimum between d and qh.
      const int64_t block_bytes = type == DType::kQ5_0 ? 22 : 24;
      const auto* b = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < elements / kQuantBlock; ++i, b += block_bytes, dst += kQuantBlock) {
        uint16_t dh, mh = 0;
        std::memcpy(&dh, b, 2);
        if (type == DType::kQ5_1) std::memcpy(&mh, b + 2, 2);
        const float d = fp16_to_fp32(dh);
        const float m = fp16_to_fp32(mh);
        uint32_t qh;
        std::memcpy(&qh, b + block_bytes - 20, 4);
        const uint8_t* qs = b + block_bytes - 16;
        for (int j = 0; j < 16; ++j) {
          const int low = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1) << 4);
          const int high = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
          if (type == DType::kQ5_0) {
            dst[j] = static_cast<float>(low - 16) * d;
            dst[j + 16] = static_cast<float>(high - 16) * d;
          } else {
            dst[j] = static_cast<float>(low) * d + m;
            dst[j + 16] = static_cast<float>(high) * d + m;
          }
        }
      }
      return;
    }
    case DType::kQ4_K: {
      const auto* b = static_cast<const BlockQ4_K*>(src);
      for (int64_t i = 0; i < elements / kSuperBlock; ++i, dst += kSuperBlock) {
        dequantize_q4_q5_k(b[i].d, b[i].dmin, b[i].scales, b[i].qs, nullptr, dst);
      }
      return;
    }
    case DType::kQ5_K: {
      const auto* b = static_cast<const BlockQ5_K*>(src);
      for (int64_t i = 0; i < elements / kSuperBlock; ++i, dst += kSuperBlock) {
        dequantize_q4_q5_k(b[i].d, b[i].dmin, b[i].scales, b[i].qs, b[i].qh, dst);
      }
      return;
    }
    case DType::kQ6_K: {
      const auto* b = static_cast<const BlockQ6_K*>(src);
      for (int64_t i = 0; i < elements / kSuperBlock; ++i) {
        const float d = fp16_to_fp32(b[i].d);
        const uint8_t* ql = b[i].ql;
        const uint8_t* qh = b[i].qh;
        const int8_t* sc = b[i].scales;
        // Per 128 values: ql[0..63] and qh[0..31]; value l + 32k takes a nibble of ql and bits
        // 2k, 2k + 1 of qh[l].
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, dst += 128) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            dst[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
            dst[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
            dst[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
            dst[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
          }
        }
      }
      return;
    }
    case DType::kQ8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t i = 0; i < elements / kQuantBlock; ++i, dst += kQuantBlock) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(b[i].qs[j]) * d;
      }
      return;
    }
  }
}

}  // namespace lightserve::kernels
