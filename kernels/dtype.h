// Element types of weights and caches, numbered as in GGUF / ggml so a file's type id maps
// directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lightserve::kernels {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

// Layout facts of one supported type: `block_elements` values are stored in `block_bytes` bytes.
struct DTypeTraits {
  DType type;
  std::string_view name;
  int64_t block_elements;
  int64_t block_bytes;
};

// Traits of a ggml type id, or nullopt if lightserve cannot compute with it.
std::optional<DTypeTraits> dtype_traits(uint32_t ggml_type_id);
const DTypeTraits& traits(DType type);

// Name of any ggml type id, known to lightserve or not ("Q6_K", "type 99"), for error messages.
std::string_view ggml_type_name(uint32_t ggml_type_id);

// Bytes of one row of `elements` values; nullopt if `elements` is not a whole number of blocks
// or the size overflows.
std::optional<int64_t> row_bytes(DType type, int64_t elements);

// Quantized block layouts (identical to ggml's, so GGUF data is used in place).
struct BlockQ4_0 {
  uint16_t d;      // f16 scale
  uint8_t qs[16];  // value = (nibble - 8) * d; low nibbles are elements 0..15
};
struct BlockQ4_1 {
  uint16_t d;      // f16 scale
  uint16_t m;      // f16 minimum
  uint8_t qs[16];  // value = nibble * d + m
};
struct BlockQ8_0 {
  uint16_t d;     // f16 scale
  int8_t qs[32];  // value = q * d
};
// Q5_0 / Q5_1: element j's fifth bit is bit j of qh (elements 0..15 are the low nibbles of qs,
// 16..31 the high nibbles).
struct BlockQ5_0 {
  uint16_t d;      // f16 scale
  uint8_t qh[4];   // fifth bits
  uint8_t qs[16];  // value = (q5 - 16) * d
};
struct BlockQ5_1 {
  uint16_t d;      // f16 scale
  uint16_t m;      // f16 minimum
  uint8_t qh[4];   // fifth bits
  uint8_t qs[16];  // value = q5 * d + m
};
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);

constexpr int64_t kQuantBlock = 32;

// K-quants: super-blocks of 256 values.
constexpr int64_t kSuperBlock = 256;

// Q4_K / Q5_K: 8 sub-blocks of 32 values, each with a 6-bit scale and a 6-bit minimum packed in
// `scales` (see kquant_scale_min); value = d · scale · q − dmin · min.
struct BlockQ4_K {
  uint16_t d;          // f16 super-scale of the scales
  uint16_t dmin;       // f16 super-scale of the minimums
  uint8_t scales[12];  // 8 scales and 8 minimums, 6 bits each
  uint8_t qs[128];     // 4-bit quants: per 64 values, 32 bytes (low nibbles first, then high)
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];   // fifth bits: bit 2i / 2i + 1 of byte l for values 64i + l / 64i + 32 + l
  uint8_t qs[128];  // low 4 bits, as Q4_K
};
// Q6_K: 16 sub-blocks of 16 values with signed 8-bit scales; value = d · scale · (q6 − 32).
struct BlockQ6_K {
  uint8_t ql[128];    // low 4 bits
  uint8_t qh[64];     // high 2 bits
  int8_t scales[16];  // sub-block scales
  uint16_t d;         // f16 super-scale
};
// The activation side of the K-quant dot products (never stored in files): per 256 values an f32
// scale, int8 quants and the sums of each 16 quants.
struct BlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// Scale and minimum of sub-block j (0..7) of a Q4_K / Q5_K block's packed `scales`.
inline void kquant_scale_min(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even, as F16C / ggml
float bf16_to_fp32(uint16_t h);
// Round to nearest even as AVX-512 BF16's vcvtneps2bf16 does (and the CUDA kernels): subnormal
// inputs become a zero of their sign, a NaN stays a quiet NaN.
uint16_t fp32_to_bf16(float f);

// The element type of the KV cache: f16 (default) or bf16 (same bytes, f32's exponent range).
// Both are 16 bits, so every KV copy and row arithmetic is the same for both.
bool is_kv_type(DType type);
// "f16" / "bf16" (or "float16" / "bfloat16") → the type; nullopt for any other name.
std::optional<DType> parse_kv_type(std::string_view name);
std::string_view kv_type_name(DType type);
// Bytes of one cached element (2 for both).
int64_t kv_type_bytes(DType type);

// Dequantizes `elements` values (a whole number of blocks for quantized types) of a row.
void dequantize_row(DType type, const void* src, float* dst, int64_t elements);

}  // namespace lightserve::kernels
