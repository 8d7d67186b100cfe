// Private to the CPU matmul: the repacked weight layout, the quantized-activation layout, and the
// per-ISA kernels that work on them. Not part of the backend interface (tests include it to reach
// the reference implementation and each ISA level).
//
// Repacked layout of a 32-value-block weight (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; "row groups"): rows
// are taken 16 at a time (the last group is padded with zero rows). A group holds its blocks in
// order; one group-block is
//   quants: for k in 0..Q, 64 bytes: row r's quant bytes 4k..4k+3 at offset 4r
//           (Q = 4 for Q4/Q5: 16 bytes of nibbles per row; Q = 8 for Q8_0: 32 bytes, stored
//           as q + 128, i.e. unsigned, so that VNNI's u8 × s8 dot applies)
//   qh:     Q5 only, 64 bytes: row r's fifth bits as one 32-bit word at offset 4r, rearranged so
//           that byte i holds, at bit k, the fifth bit of value 4k + i (a low nibble of quant
//           byte 4k + i) and, at bit 4 + k, that of value 16 + 4k + i (its high nibble): pass k
//           of a kernel gets its fifth bits with one shift and one mask
//   d:      16 f16 scales
//   m:      16 f16 minimums (Q4_1, Q5_1)
// so one 64-byte load gives 16 rows × 4 quants, one VNNI instruction against a broadcast of four
// activation bytes yields the partial dots of 16 rows, and the bytes equal the file's in number.
//
// K-quant weights (Q4_K, Q5_K, Q6_K) keep the file's row layout (one contiguous copy); their
// activations are quantized per 256 values to Q8_K and each output is llama.cpp's
// vec_dot_qN_K_q8_K of one row with one token.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/backend.h"

namespace lightserve::kernels::cpu::detail {

constexpr int64_t kGroupRows = 16;

// Bytes of one group-block (16 rows × one 32-value block) in the repacked layout.
constexpr int64_t group_block_bytes(DType type) {
  switch (type) {
    case DType::kQ4_0:
      return 16 * 16 + 32;
    case DType::kQ4_1:
      return 16 * 16 + 32 + 32;
    case DType::kQ5_0:
      return 16 * 16 + 64 + 32;
    case DType::kQ5_1:
      return 16 * 16 + 64 + 32 + 32;
    case DType::kQ8_0:
      return 16 * 32 + 32;
    default:
      return 0;
  }
}
constexpr int64_t quant_bytes_per_row(DType type) {
  return type == DType::kQ8_0 ? 32 : 16;
}
constexpr bool has_fifth_bits(DType type) {
  return type == DType::kQ5_0 || type == DType::kQ5_1;
}
constexpr bool has_minimum(DType type) {
  return type == DType::kQ4_1 || type == DType::kQ5_1;
}
// Offset of the 16 f16 scales in a group-block (the minimums follow at + 32).
constexpr int64_t group_scales_offset(DType type) {
  return quant_bytes_per_row(type) * 16 + (has_fifth_bits(type) ? 64 : 0);
}
// The integer each weight quant of the repacked layout carries on top of the signed value the
// dot needs (cancelled as −offset · Σa).
constexpr int32_t quant_offset(DType type) {
  switch (type) {
    case DType::kQ4_0:
      return 8;
    case DType::kQ5_0:
      return 16;
    case DType::kQ8_0:
      return 128;
    default:
      return 0;
  }
}
// Types stored in the row-group layout.
constexpr bool is_group_type(DType type) {
  return group_block_bytes(type) != 0;
}
constexpr bool is_kquant(DType type) {
  return type == DType::kQ4_K || type == DType::kQ5_K || type == DType::kQ6_K;
}

// Fifth bits of one Q5 block (bit j = value j) in the repacked qh order above, and back.
constexpr uint32_t repack_fifth_bits(uint32_t qh) {
  uint32_t out = 0;
  for (uint32_t i = 0; i < 4; ++i) {
    for (uint32_t k = 0; k < 4; ++k) {
      out |= ((qh >> (4 * k + i)) & 1u) << (8 * i + k);
      out |= ((qh >> (16 + 4 * k + i)) & 1u) << (8 * i + 4 + k);
    }
  }
  return out;
}
constexpr uint32_t unpack_fifth_bits(uint32_t packed) {
  uint32_t qh = 0;
  for (uint32_t i = 0; i < 4; ++i) {
    for (uint32_t k = 0; k < 4; ++k) {
      qh |= ((packed >> (8 * i + k)) & 1u) << (4 * k + i);
      qh |= ((packed >> (8 * i + 4 + k)) & 1u) << (16 + 4 * k + i);
    }
  }
  return qh;
}

// A repacked quantized weight, as the kernels see it.
struct PackedWeight {
  DType type = DType::kQ4_1;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t blocks = 0;       // cols / 32
  int64_t groups = 0;       // ceil(rows / 16)
  int64_t group_bytes = 0;  // blocks * group_block_bytes(type)
  const uint8_t* data = nullptr;
};

// The AVX-512 kernel's copy of the quantized activations, in token tiles: tile i holds tokens
// 16i .. 16i + 15 and, per block b, those tokens side by side:
//   qs:  blocks × 16 × 32 bytes (token j's quants of block b at b · 512 + 32 j)
//   d, s: blocks × 16 floats each, then sum: blocks × 16 int32 (token j of block b at 16 b + j)
// so everything one microkernel call reads for one block is a constant offset from one pointer
// per array (read in place, the 16 tokens' rows are 16 pointers per array, more than the
// general registers hold).
constexpr int64_t kActTileTokens = 16;
constexpr int64_t act_tile_bytes(int64_t blocks) {
  return blocks * kActTileTokens * (32 + 3 * 4);
}

// Activations of n tokens quantized per 32 values, as llama.cpp's Q8_0 / Q8_1 (the same
// quants serve both; `s` is only meaningful for Q4_1 weights).
struct QuantizedActs {
  int64_t n = 0;
  int64_t cols = 0;
  int64_t blocks = 0;
  int8_t* qs = nullptr;    // n × cols
  float* d = nullptr;      // n × blocks: f16 scale, widened
  float* s = nullptr;      // n × blocks: f16(d · Σq), widened
  int32_t* sum = nullptr;  // n × blocks: Σq
  // ceil(n / 16) × act_tile_bytes(blocks), 64-byte aligned, or null: the AVX-512 quantize fills
  // it when set, and the AVX-512 gemm needs it.
  uint8_t* tiles = nullptr;
};

// llama.cpp's scalar vec_dot of one file-encoded K-quant row with Q8_K activations (the oracle).
float kquant_dot_reference(DType type, const void* row, const BlockQ8_K* acts, int64_t blocks);

// One activation block with ggml's field encodings (f16 bit patterns), plus the integer sum.
struct Q8Block {
  uint16_t d = 0;
  uint16_t s = 0;
  int8_t qs[32] = {};
  int32_t sum = 0;
};

// llama.cpp's x86 activation quantization of one block of 32 values: amax = max|x|,
// d = amax / 127, id = 127 / amax (0 if amax is 0), q = round-half-even(x · id),
// s = f16(d · Σq) with d the unrounded f32 scale.
Q8Block quantize_block_reference(const float* x);

// llama.cpp's quantize_row_q8_K_ref for one block of 256 values: the value of largest magnitude
// (the first one) is `max`, iscale = −127 / max, q = min(127, round-half-even(iscale · x)),
// d = 1 / iscale (so d has the opposite sign of max), bsums = sums of each 16 quants.
BlockQ8_K quantize_block_q8k_reference(const float* x);

// The oracle: y[n × rows] for the row-wise concatenation of `parts`, straight from the file
// encoding, one scalar dot at a time with f32 accumulation over blocks.
void reference_matmul(std::span<const WeightView> parts, const float* x, int64_t n, float* y);

// A K-quant weight in its file layout, as the kernels see it.
struct KQuantWeight {
  DType type = DType::kQ4_K;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t blocks = 0;     // cols / 256
  int64_t row_bytes = 0;  // blocks * block bytes
  const uint8_t* data = nullptr;
};

// Kernels of one ISA level. quantize fills tokens [t0, t1) of `a` from x (n × cols);
// gemm computes groups [g0, g1) × tokens [t0, t1) of y (n × rows); gemm_k computes rows [r0, r1)
// × tokens [t0, t1) of y for a K-quant weight from Q8_K activations (`acts`: n × blocks).
struct KernelSet {
  void (*quantize)(const float* x, int64_t t0, int64_t t1, const QuantizedActs& a);
  void (*gemm)(const PackedWeight& w, const QuantizedActs& a, int64_t g0, int64_t g1, int64_t t0,
               int64_t t1, float* y);
  void (*gemm_k)(const KQuantWeight& w, const BlockQ8_K* acts, int64_t r0, int64_t r1, int64_t t0,
                 int64_t t1, float* y);
  // Dot of two f32 vectors (for F32 / F16 / BF16 weights, after widening).
  float (*dot_f32)(const float* a, const float* b, int64_t count);
  int64_t token_tile;  // tokens one microkernel call handles at most
};

const KernelSet& scalar_kernels();
const KernelSet& avx2_kernels(bool vnni);  // vnni: use AVX-VNNI; else maddubs
const KernelSet& avx512_kernels();         // needs AVX-512 F/BW/VL/DQ + VNNI
// AMX-INT8 gemm for large n; nullptr-safe: only call when features.amx_int8.
const KernelSet& amx_kernels();

}  // namespace lightserve::kernels::cpu::detail
