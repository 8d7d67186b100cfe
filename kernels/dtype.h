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
  kQ8_0 = 8,
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
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ8_0) == 34);

constexpr int64_t kQuantBlock = 32;

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even, as F16C / ggml
float bf16_to_fp32(uint16_t h);

// Dequantizes `elements` values (a whole number of blocks for quantized types) of a row.
void dequantize_row(DType type, const void* src, float* dst, int64_t elements);

}  // namespace lightserve::kernels
