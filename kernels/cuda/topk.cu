// Backend::topk_rows on the GPU: a radix select per row, one block per row.
//
// Every value becomes its 32-bit rank key (kernels/topk.h: larger key = ranks first, equal keys
// by index), so "the k best" is "the k largest (key, -index) pairs". Per row:
//  1. Radix select of T, the kept-th largest key (kept = min(k, width)), a byte at a time from the
//     top: four passes over the row, each a 256-bin histogram of the next byte among the keys
//     whose higher bytes equal T's so far. `need` counts how many keys of the current prefix still
//     belong to the kept: the scan from the largest byte down stops at the byte where they do.
//     After the last byte, exactly kept − need keys are > T and at least `need` keys equal T.
//  2. One pass collects the keys > T (in any order, through a shared counter) and the first
//     `need` keys == T in index order (a block-wide ordered compaction: a ballot per warp, the
//     warps' counts added in warp order), which is what the tie rule asks for.
//  3. The kept entries are sorted by rank: each one's position is the number of entries that
//     rank before it (kept² comparisons, kept ≤ 256), and written out with its original value.
// Five reads of the row in all; the histogram adds are aggregated per warp (__match_any_sync), so
// the few bins that hold most logits do not serialise the block on one shared-memory address.
#include <cstdint>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/topk.h"

namespace lightserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarp = 32;
constexpr int kWarps = kThreads / kWarp;
constexpr int kBins = 256;

__global__ void __launch_bounds__(kThreads)
    topk_rows_kernel(const float* __restrict__ x, int64_t width, const int32_t* __restrict__ rows,
                     int32_t k, Ranked* __restrict__ out) {
  __shared__ uint32_t hist[kBins];
  __shared__ uint32_t kept_key[kMaxTopK];
  __shared__ int32_t kept_id[kMaxTopK];
  __shared__ uint32_t warp_counts[kWarps];
  __shared__ uint32_t shared_prefix, shared_need, num_above;

  const float* row = x + static_cast<int64_t>(rows[blockIdx.x]) * width;
  Ranked* dst = out + static_cast<int64_t>(blockIdx.x) * k;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarp;
  const int warp = tid / kWarp;
  const uint32_t kept = static_cast<uint32_t>(width < k ? width : k);

  // 1. Radix select of T, the kept-th largest key.
  uint32_t prefix = 0;  // T's bytes found so far
  uint32_t need = kept;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid; b < kBins; b += kThreads) hist[b] = 0;
    __syncthreads();
    const uint32_t high = shift == 24 ? 0u : 0xFFFFFFFFu << (shift + 8);  // the bytes found
    // `base` is the same in every thread, so whole warps reach __match_any_sync together.
    for (int64_t base = 0; base < width; base += kThreads) {
      const int64_t i = base + tid;
      uint32_t bin = kBins;  // not counted
      if (i < width) {
        const uint32_t key = rank_key(row[i], i);
        if ((key & high) == prefix) bin = (key >> shift) & 0xFFu;
      }
      const unsigned peers = __match_any_sync(0xFFFFFFFFu, bin);
      if (bin < kBins && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
    }
    __syncthreads();
    if (tid == 0) {
      uint32_t above = 0;  // keys of the prefix with a larger byte than d
      int d = kBins - 1;
      for (; d > 0 && above + hist[d] < need; --d) above += hist[d];
      shared_prefix = prefix | (static_cast<uint32_t>(d) << shift);
      shared_need = need - above;
    }
    __syncthreads();
    prefix = shared_prefix;
    need = shared_need;
  }
  const uint32_t threshold = prefix;
  const uint32_t num_greater = kept - need;

  // 2. Collect: every key > T, and the first `need` keys == T by index.
  if (tid == 0) num_above = 0;
  __syncthreads();
  uint32_t equal_seen = 0;  // keys == T before this tile (the same in every thread)
  for (int64_t base = 0; base < width; base += kThreads) {
    const int64_t i = base + tid;
    uint32_t key = 0;
    bool greater = false, equal = false;
    if (i < width) {
      key = rank_key(row[i], i);
      greater = key > threshold;
      equal = key == threshold;
    }
    if (greater) {
      const uint32_t slot = atomicAdd(&num_above, 1u);
      kept_key[slot] = key;
      kept_id[slot] = static_cast<int32_t>(i);
    }
    const unsigned ballot = __ballot_sync(0xFFFFFFFFu, equal);
    if (lane == 0) warp_counts[warp] = static_cast<uint32_t>(__popc(ballot));
    __syncthreads();
    uint32_t order = equal_seen + static_cast<uint32_t>(__popc(ballot & ((1u << lane) - 1u)));
    uint32_t tile_equal = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) order += warp_counts[w];
      tile_equal += warp_counts[w];
    }
    if (equal && order < need) {
      kept_key[num_greater + order] = key;
      kept_id[num_greater + order] = static_cast<int32_t>(i);
    }
    equal_seen += tile_equal;
    __syncthreads();  // warp_counts is rewritten by the next tile
  }

  // 3. Each kept entry's position in rank order; then the padding past the row's width.
  for (uint32_t j = tid; j < kept; j += kThreads) {
    const uint32_t key = kept_key[j];
    const int32_t id = kept_id[j];
    uint32_t rank = 0;
    for (uint32_t m = 0; m < kept; ++m) {
      rank += kept_key[m] > key || (kept_key[m] == key && kept_id[m] < id) ? 1u : 0u;
    }
    dst[rank] = Ranked{id, row[id]};
  }
  for (int64_t j = static_cast<int64_t>(kept) + tid; j < k; j += kThreads) {
    dst[j] = Ranked{-1, __int_as_float(0x7FC00000)};
  }
}

}  // namespace

void launch_topk_rows(cudaStream_t stream, const float* x, int64_t width, const int32_t* rows,
                      int64_t num_rows, int32_t k, Ranked* out) {
  // Grid x holds up to 2³¹ − 1 blocks; a step's rows are far fewer.
  topk_rows_kernel<<<static_cast<unsigned>(num_rows), kThreads, 0, stream>>>(x, width, rows, k,
                                                                             out);
  LS_CUDA_LAUNCHED();
}

}  // namespace lightserve::kernels::cuda
