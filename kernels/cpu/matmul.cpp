// CPU matmul: weight repacking, activation quantization and the split of work across the pool.
// The kernels themselves live in matmul_reference.cpp (scalar), matmul_avx2.cpp,
// matmul_avx512.cpp and matmul_amx.cpp; see matmul_kernels.h for the layouts.
#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul_kernels.h"

namespace lightserve::kernels::cpu {
namespace {

using detail::kGroupRows;

// From this many tokens on, AMX tiles (16 tokens each) beat the AVX-512 VNNI kernel.
constexpr int64_t kAmxMinTokens = 32;

using detail::is_group_type;
using detail::is_kquant;

// The AMX kernel covers the original three group types only; the others use the VNNI kernel.
bool amx_supports(DType type) {
  return type == DType::kQ4_0 || type == DType::kQ4_1 || type == DType::kQ8_0;
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

class CpuWeight final : public Weight {
 public:
  DType type() const override { return type_; }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  int64_t resident_bytes() const override { return resident_bytes_; }

  DType type_ = DType::kF32;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  int64_t resident_bytes_ = 0;
  // F32 / F16 / BF16: read in place from the parts.
  std::vector<WeightView> parts_;
  // Row-group types: the repacked copy.
  detail::PackedWeight packed_;
  // K-quants: the rows, copied contiguously in their file layout.
  detail::KQuantWeight kquant_;
  std::unique_ptr<uint8_t, FreeDeleter> storage_;
  // Parts of different types (Q, K and V of a K-quant mix): one weight per run of equal types,
  // its rows starting at piece_first_row_[i]; the fields above are then unused.
  std::vector<std::unique_ptr<CpuWeight>> pieces_;
  std::vector<int64_t> piece_first_row_;
};

std::unique_ptr<CpuWeight> make_cpu_weight(std::span<const WeightView> parts);

void repack(std::span<const WeightView> parts, CpuWeight& w) {
  const DType type = w.type_;
  const int64_t blocks = w.cols_ / 32;
  const int64_t groups = (w.rows_ + kGroupRows - 1) / kGroupRows;
  const int64_t block_bytes = detail::group_block_bytes(type);
  const int64_t group_bytes = blocks * block_bytes;
  const int64_t total = std::max<int64_t>(64, (groups * group_bytes + 63) / 64 * 64);
  auto* data = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(total)));
  std::memset(data, 0, static_cast<size_t>(total));
  w.storage_.reset(data);
  w.resident_bytes_ = total;
  w.packed_ = {type, w.rows_, w.cols_, blocks, groups, group_bytes, data};

  const int64_t qbytes = detail::quant_bytes_per_row(type);
  const int64_t scales = detail::group_scales_offset(type);
  const bool has_min = detail::has_minimum(type);
  const bool fifth_bits = detail::has_fifth_bits(type);
  const int64_t src_block = traits(type).block_bytes;
  const int64_t src_row = blocks * src_block;
  // The file block: d, (m), (qh[4]), quants.
  const int64_t header = 2 + (has_min ? 2 : 0) + (fifth_bits ? 4 : 0);
  int64_t row = 0;
  for (const auto& p : parts) {
    for (int64_t r = 0; r < p.rows; ++r, ++row) {
      const int64_t g = row / kGroupRows, lane = row % kGroupRows;
      const auto* src = static_cast<const uint8_t*>(p.data) + r * src_row;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* s = src + b * src_block;
        uint8_t* dst = data + g * group_bytes + b * block_bytes;
        for (int64_t j = 0; j < qbytes; ++j) {
          uint8_t q = s[header + j];
          if (type == DType::kQ8_0) q ^= 0x80;  // s8 → u8 (q + 128)
          dst[(j / 4) * 64 + lane * 4 + j % 4] = q;
        }
        if (fifth_bits) {
          uint32_t qh;
          std::memcpy(&qh, s + header - 4, 4);
          const uint32_t packed = detail::repack_fifth_bits(qh);
          std::memcpy(dst + qbytes * 16 + 4 * lane, &packed, 4);
        }
        std::memcpy(dst + scales + 2 * lane, s, 2);
        if (has_min) std::memcpy(dst + scales + 32 + 2 * lane, s + 2, 2);
      }
    }
  }
}

void copy_kquant(std::span<const WeightView> parts, CpuWeight& w) {
  const int64_t row_size = *row_bytes(w.type_, w.cols_);
  const int64_t total = std::max<int64_t>(64, (w.rows_ * row_size + 63) / 64 * 64);
  auto* data = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(total)));
  std::memset(data, 0, static_cast<size_t>(total));
  w.storage_.reset(data);
  w.resident_bytes_ = total;
  w.kquant_ = {w.type_, w.rows_, w.cols_, w.cols_ / kSuperBlock, row_size, data};
  uint8_t* dst = data;
  for (const auto& p : parts) {
    std::memcpy(dst, p.data, static_cast<size_t>(p.rows * row_size));
    dst += p.rows * row_size;
  }
}

const detail::KernelSet& kernels_for(const CpuFeatures& f) {
  if (f.avx512 && f.avx512_vnni) return detail::avx512_kernels();
  if (f.avx2) return detail::avx2_kernels(f.avx_vnni);
  return detail::scalar_kernels();
}

// Quantized activations of the current call, reused across calls (matmul is called from one
// thread at a time; the buffers only grow).
struct ActivationBuffers {
  std::vector<int8_t> qs;
  std::vector<float> d, s;
  std::vector<int32_t> sum;
  std::vector<uint8_t> tiles;

  detail::QuantizedActs prepare(int64_t n, int64_t cols) {
    const int64_t blocks = cols / 32;
    const auto need_q = static_cast<size_t>(n * cols + 64);
    const auto need_b = static_cast<size_t>(n * blocks + 16);
    const int64_t num_tiles = (n + detail::kActTileTokens - 1) / detail::kActTileTokens;
    const auto need_tiles = static_cast<size_t>(num_tiles * detail::act_tile_bytes(blocks) + 64);
    if (qs.size() < need_q) qs.resize(need_q);
    if (d.size() < need_b) {
      d.resize(need_b);
      s.resize(need_b);
      sum.resize(need_b);
    }
    if (tiles.size() < need_tiles) tiles.resize(need_tiles);
    auto* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(tiles.data()) + 63) &
                                               ~uintptr_t{63});
    return {n, cols, blocks, qs.data(), d.data(), s.data(), sum.data(), aligned};
  }
};

void matmul_quantized(ThreadPool& pool, const CpuFeatures& features, const CpuWeight& w,
                      const float* x, int64_t n, float* y) {
  static thread_local ActivationBuffers buffers;
  const detail::KernelSet& ks = kernels_for(features);
  const detail::QuantizedActs acts = buffers.prepare(n, w.cols_);
  // Quantization is cheap next to the matmul: split it only when there are many tokens.
  pool.parallel_for(n, std::max<int64_t>(1, 16384 / w.cols_),
                    [&](int64_t t0, int64_t t1) { ks.quantize(x, t0, t1, acts); });

  const bool use_amx =
      features.amx_int8 && features.avx512_vnni && n >= kAmxMinTokens && amx_supports(w.type_);
  const detail::KernelSet& gemm = use_amx ? detail::amx_kernels() : ks;
  const detail::PackedWeight& pw = w.packed_;
  const int threads = pool.num_threads();
  if (pw.groups >= 2 * threads || n <= gemm.token_tile) {
    pool.parallel_for(pw.groups, 1,
                      [&](int64_t g0, int64_t g1) { gemm.gemm(pw, acts, g0, g1, 0, n, y); });
  } else {
    // Few row groups, many tokens: split the tokens, in whole tiles.
    const int64_t tile = gemm.token_tile;
    pool.parallel_for((n + tile - 1) / tile, 1, [&](int64_t i0, int64_t i1) {
      gemm.gemm(pw, acts, 0, pw.groups, i0 * tile, std::min(n, i1 * tile), y);
    });
  }
}

// Q8_K activations of the current call, reused across calls like ActivationBuffers.
std::vector<BlockQ8_K>& kquant_activation_buffer() {
  static thread_local std::vector<BlockQ8_K> buffer;
  return buffer;
}

void matmul_kquant(ThreadPool& pool, const CpuFeatures& features, const CpuWeight& w,
                   const float* x, int64_t n, float* y) {
  const detail::KernelSet& ks = kernels_for(features);
  const detail::KQuantWeight& kw = w.kquant_;
  std::vector<BlockQ8_K>& acts = kquant_activation_buffer();
  if (acts.size() < static_cast<size_t>(n * kw.blocks))
    acts.resize(static_cast<size_t>(n * kw.blocks));
  BlockQ8_K* a = acts.data();
  // llama.cpp's x86 build quantizes to Q8_K with the scalar reference too.
  pool.parallel_for(n, std::max<int64_t>(1, 16384 / w.cols_), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t b = 0; b < kw.blocks; ++b) {
        a[t * kw.blocks + b] =
            detail::quantize_block_q8k_reference(x + t * w.cols_ + b * kSuperBlock);
      }
    }
  });
  const int threads = pool.num_threads();
  if (kw.rows >= 8 * threads || n == 1) {
    pool.parallel_for(kw.rows, 8,
                      [&](int64_t r0, int64_t r1) { ks.gemm_k(kw, a, r0, r1, 0, n, y); });
  } else {
    // Few rows, many tokens: split the tokens.
    pool.parallel_for(n, 1,
                      [&](int64_t t0, int64_t t1) { ks.gemm_k(kw, a, 0, kw.rows, t0, t1, y); });
  }
}

void matmul_float(ThreadPool& pool, const CpuFeatures& features, const CpuWeight& w, const float* x,
                  int64_t n, float* y) {
  const detail::KernelSet& ks = kernels_for(features);
  const int64_t cols = w.cols_;
  pool.parallel_for(w.rows_, 16, [&](int64_t r0, int64_t r1) {
    static thread_local std::vector<float> row;
    if (row.size() < static_cast<size_t>(cols)) row.resize(static_cast<size_t>(cols));
    int64_t part_first = 0;
    size_t part = 0;
    for (int64_t r = r0; r < r1; ++r) {
      while (r >= part_first + w.parts_[part].rows) part_first += w.parts_[part++].rows;
      const WeightView& p = w.parts_[part];
      const auto* src = static_cast<const uint8_t*>(p.data) +
                        (r - part_first) * cols * traits(p.type).block_bytes;
      dequantize_row(p.type, src, row.data(), cols);
      for (int64_t t = 0; t < n; ++t)
        y[t * w.rows_ + r] = ks.dot_f32(row.data(), x + t * cols, cols);
    }
  });
}

// Parts of mixed types: a weight of pieces, one per run of equal types.
std::unique_ptr<CpuWeight> make_mixed_weight(std::span<const WeightView> parts) {
  auto w = std::make_unique<CpuWeight>();
  w->type_ = parts[0].type;
  w->cols_ = parts[0].cols;
  size_t begin = 0;
  while (begin < parts.size()) {
    size_t end = begin + 1;
    while (end < parts.size() && parts[end].type == parts[begin].type) ++end;
    auto piece = make_cpu_weight(parts.subspan(begin, end - begin));
    if (piece == nullptr) return nullptr;
    w->piece_first_row_.push_back(w->rows_);
    w->rows_ += piece->rows_;
    w->resident_bytes_ += piece->resident_bytes_;
    w->pieces_.push_back(std::move(piece));
    begin = end;
  }
  return w;
}

std::unique_ptr<CpuWeight> make_cpu_weight(std::span<const WeightView> parts) {
  if (parts.empty()) return nullptr;
  auto w = std::make_unique<CpuWeight>();
  w->type_ = parts[0].type;
  w->cols_ = parts[0].cols;
  for (const auto& p : parts) {
    if (p.cols != w->cols_ || p.rows < 0 || p.data == nullptr) return nullptr;
    if (!dtype_traits(static_cast<uint32_t>(p.type))) return nullptr;
  }
  for (const auto& p : parts) {
    if (p.type != w->type_) return make_mixed_weight(parts);
    w->rows_ += p.rows;
  }
  if (is_group_type(w->type_)) {
    if (w->cols_ % 32 != 0 || w->cols_ <= 0) return nullptr;
    repack(parts, *w);
  } else if (is_kquant(w->type_)) {
    if (w->cols_ % kSuperBlock != 0 || w->cols_ <= 0) return nullptr;
    copy_kquant(parts, *w);
  } else {
    w->parts_.assign(parts.begin(), parts.end());
  }
  return w;
}

}  // namespace

std::unique_ptr<Weight> make_weight(std::span<const WeightView> parts,
                                    const CpuFeatures& /*features*/) {
  return make_cpu_weight(parts);
}

void matmul(ThreadPool& pool, const CpuFeatures& features, const Weight& w, const float* x,
            int64_t n, float* y) {
  if (n <= 0 || w.rows() == 0) return;
  const auto& cw = static_cast<const CpuWeight&>(w);
  if (!cw.pieces_.empty()) {
    // Each piece into its own columns of y, through a scratch of n × piece rows.
    static thread_local std::vector<float> scratch;
    for (size_t i = 0; i < cw.pieces_.size(); ++i) {
      const CpuWeight& piece = *cw.pieces_[i];
      if (scratch.size() < static_cast<size_t>(n * piece.rows_)) {
        scratch.resize(static_cast<size_t>(n * piece.rows_));
      }
      matmul(pool, features, piece, x, n, scratch.data());
      for (int64_t t = 0; t < n; ++t) {
        std::memcpy(y + t * cw.rows_ + cw.piece_first_row_[i], scratch.data() + t * piece.rows_,
                    static_cast<size_t>(piece.rows_) * sizeof(float));
      }
    }
    return;
  }
  if (is_group_type(cw.type_)) {
    matmul_quantized(pool, features, cw, x, n, y);
  } else if (is_kquant(cw.type_)) {
    matmul_kquant(pool, features, cw, x, n, y);
  } else {
    matmul_float(pool, features, cw, x, n, y);
  }
}

void embed(const Weight& w, std::span<const int32_t> ids, float* out) {
  const auto& cw = static_cast<const CpuWeight&>(w);
  const int64_t cols = cw.cols_;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    float* dst = out + static_cast<int64_t>(i) * cols;
    if (!cw.pieces_.empty()) {
      size_t p = cw.pieces_.size() - 1;
      while (p > 0 && id < cw.piece_first_row_[p]) --p;
      const int32_t local = static_cast<int32_t>(id - cw.piece_first_row_[p]);
      embed(*cw.pieces_[p], {&local, 1}, dst);
      continue;
    }
    if (is_kquant(cw.type_)) {
      const detail::KQuantWeight& kw = cw.kquant_;
      dequantize_row(kw.type, kw.data + id * kw.row_bytes, dst, cols);
      continue;
    }
    if (!is_group_type(cw.type_)) {
      int64_t first = 0;
      for (const auto& p : cw.parts_) {
        if (id < first + p.rows) {
          const auto* src = static_cast<const uint8_t*>(p.data) +
                            (id - first) * cols * traits(p.type).block_bytes;
          dequantize_row(p.type, src, dst, cols);
          break;
        }
        first += p.rows;
      }
      continue;
    }
    const detail::PackedWeight& pw = cw.packed_;
    const int64_t g = id / kGroupRows, lane = id % kGroupRows;
    const int64_t qbytes = detail::quant_bytes_per_row(pw.type);
    const int64_t scales = detail::group_scales_offset(pw.type);
    const int offset = detail::quant_offset(pw.type);
    for (int64_t b = 0; b < pw.blocks; ++b) {
      const uint8_t* blk = pw.data + g * pw.group_bytes + b * detail::group_block_bytes(pw.type);
      uint16_t dh, mh = 0;
      std::memcpy(&dh, blk + scales + 2 * lane, 2);
      if (detail::has_minimum(pw.type)) std::memcpy(&mh, blk + scales + 32 + 2 * lane, 2);
      const float d = fp16_to_fp32(dh), m = fp16_to_fp32(mh);
      uint32_t qh = 0;
      if (detail::has_fifth_bits(pw.type)) {
        uint32_t packed;
        std::memcpy(&packed, blk + qbytes * 16 + 4 * lane, 4);
        qh = detail::unpack_fifth_bits(packed);
      }
      float* o = dst + b * 32;
      for (int64_t j = 0; j < qbytes; ++j) {
        const uint8_t byte = blk[(j / 4) * 64 + lane * 4 + j % 4];
        if (pw.type == DType::kQ8_0) {
          o[j] = static_cast<float>(static_cast<int>(byte) - offset) * d;
          continue;
        }
        const auto low = static_cast<int>((byte & 0x0f) | (((qh >> j) & 1u) << 4));
        const auto high = static_cast<int>((byte >> 4) | (((qh >> (j + 16)) & 1u) << 4));
        if (detail::has_minimum(pw.type)) {
          o[j] = static_cast<float>(low) * d + m;
          o[j + 16] = static_cast<float>(high) * d + m;
        } else {
          o[j] = static_cast<float>(low - offset) * d;
          o[j + 16] = static_cast<float>(high - offset) * d;
        }
      }
    }
  }
}

}  // namespace lightserve::kernels::cpu
