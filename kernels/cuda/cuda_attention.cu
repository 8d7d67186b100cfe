// CudaAttention: Backend::attention and Backend::lazy_ratio on the device, with the semantics of
// the CPU oracle (kernels/cpu/attention_impl.inc): queries rounded to f16, scores
// scale · Σ q·k accumulated in f32, lse = the natural log-sum-exp of the scaled scores, GQA
// (query head h reads KV head h / (heads / kv_heads)), causal and streaming (ring) masks.
//
// Two paths, chosen per sequence:
//  - Prefill (kContiguous keys, 16-byte aligned rows, enough queries): one fused causal
//    flash-attention kernel on tensor cores (flash_prefill.cu).
//  - Everything else (decode, short chunks, paged and ring views): split-K flash decoding. A block
//    scores one key split of one query for the `group` query heads of one KV head (online softmax
//    in f32) and writes a partial (max, sum, unnormalized output); a merge kernel combines the
//    splits. Probabilities stay f32 here, and round_probabilities_f16 is not honoured (rounding the
//    normalized probabilities needs the global max and sum before any value is weighted, i.e. a
//    second pass over the keys); the difference is within the tests' tolerances.
//
// Host inputs (the AttentionSeq array and its block tables) are packed into one host buffer per
// call and copied with one pinned-staged cudaMemcpyAsync (CudaContext::upload_small); nothing in
// attention() waits for the device.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_graphs.h"

namespace lightserve::kernels::cuda {
namespace {

constexpr int kChunk = 256;    // keys a split block scores per shared-memory pass
constexpr int kMinSplit = 64;  // smallest key split of the decode path

// Block (x = split slot, y = KV head): keys [j0, j1) of one query for its G query heads. Per
// chunk of kChunk keys: scores into shared memory (key groups), the chunk max and exp (a warp per
// head), then the values weighted (lanes over dimensions, warps over keys); running max/sum/acc
// carried across chunks. Writes partial (m, l) and the unnormalized Σ exp(s − m)·v.
template <int HD, int G>
__global__ void __launch_bounds__(kThreads)
    split_kernel(const float* __restrict__ q, const SeqDesc* __restrict__ descs,
                 const int32_t* __restrict__ block_seq, const int32_t* __restrict__ tables,
                 int64_t q_stride, int heads, float scale, int split, float* __restrict__ part_acc,
                 float* __restrict__ part_ml) {
  using L = Lanes<HD>;
  constexpr int kDpl = HD / 32;  // value dimensions per lane
  constexpr int kPerHead = kChunk > kWarps * HD ? kChunk : kWarps * HD;
  constexpr int kUnroll1 = G <= 4 ? 2 : 1;  // keys per key group in flight while scoring
  constexpr int kUnroll3 = 8;               // value rows per warp in flight
  // Scores / probabilities [G][kChunk]; after the last chunk, the cross-warp sums [kWarps][G][HD].
  __shared__ float sh_s[G * kPerHead];
  __shared__ int64_t sh_off[kChunk];
  __shared__ float sh_mn[G], sh_cs[G];
  __shared__ SeqDesc sd;

  if (threadIdx.x == 0) sd = descs[block_seq[blockIdx.x]];
  __syncthreads();
  const int local = static_cast<int>(blockIdx.x) - sd.block_base;
  const int32_t i = local / sd.nsplit;
  const int32_t split_index = local % sd.nsplit;
  if (i >= sd.num_queries) return;  // a padded row of a graph's bucket (no query)
  const KeySpan span = attended_span(sd, sd.first_pos + i);
  const int32_t j0 = split_index * split;
  if (j0 >= span.count) return;  // a split past this query's keys (earlier queries of a chunk)
  const int32_t j1 = imin(j0 + split, span.count);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kl = lane % L::kPerKey, ks = lane / L::kPerKey;
  const int kvh = blockIdx.y;
  const int64_t head_offset = static_cast<int64_t>(kvh) * HD;
  const bool vec = sd.vec != 0, bf16 = sd.bf16 != 0;

  float qr[G][16];
  load_query<HD, G>(q + (sd.first_row + i) * q_stride + head_offset * G, kl, bf16, qr);

  float m_run[G], l_run[G], acc[G][kDpl];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m_run[g] = kNegInf;
    l_run[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < kDpl; ++e) acc[g][e] = 0.0f;
  }

  for (int32_t c0 = j0; c0 < j1; c0 += kChunk) {
    const int n = imin(kChunk, j1 - c0);
    // Scores. `base` is warp-uniform, so every lane reaches the shuffles in key_dots.
    for (int base = warp * L::kKeysPerWarp; base < n; base += kUnroll1 * L::kKeysPerBlock) {
      float kf[kUnroll1][16];
      int64_t off[kUnroll1];
#pragma unroll
      for (int u = 0; u < kUnroll1; ++u) {
        const int j = base + u * L::kKeysPerBlock + ks;
        off[u] = 0;
        if (j < n) {
          off[u] = token_row(sd, tables, span_token(span, c0 + j));
          load_key<HD>(sd.k + off[u] + head_offset, kl, vec, bf16, kf[u]);
        } else {
#pragma unroll
          for (int e = 0; e < 16; ++e) kf[u][e] = 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll1; ++u) {
        float dot[G];
        key_dots<HD, G>(qr, kf[u], dot);
        const int j = base + u * L::kKeysPerBlock + ks;
        if (j < n) {
#pragma unroll
          for (int g = 0; g < G; ++g) {
            if (g % L::kPerKey == kl) sh_s[g * kChunk + j] = dot[g] * scale;
          }
          if (kl == 0) sh_off[j] = off[u];
        }
      }
    }
    __syncthreads();
    // Chunk max and probabilities relative to the new running max, a warp per head.
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (g % kWarps != warp) continue;
      float* s = sh_s + g * kChunk;
      float cm = kNegInf;
      for (int j = lane; j < n; j += 32) cm = fmaxf(cm, s[j]);
      const float mn = fmaxf(m_run[g], warp_max(cm));  // finite: n ≥ 1
      float cs = 0.0f;
      for (int j = lane; j < n; j += 32) {
        const float e = expf(s[j] - mn);
        s[j] = e;
        cs += e;
      }
      cs = warp_sum(cs);
      if (lane == 0) {
        sh_mn[g] = mn;
        sh_cs[g] = cs;
      }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float mn = sh_mn[g];
      const float correction = expf(m_run[g] - mn);  // 0 on the first chunk (m_run = −inf)
      l_run[g] = l_run[g] * correction + sh_cs[g];
      m_run[g] = mn;
#pragma unroll
      for (int e = 0; e < kDpl; ++e) acc[g][e] *= correction;
    }
    // Values: lane owns dims lane·kDpl.., warp w takes keys w, w + kWarps, ...
    const uint16_t* vbase = sd.v + head_offset + lane * kDpl;
    for (int jb = warp; jb < n; jb += kWarps * kUnroll3) {
      float vf[kUnroll3][kDpl];
#pragma unroll
      for (int u = 0; u < kUnroll3; ++u) {
        const int j = jb + u * kWarps;
        if (j < n) {
          load_kv<kDpl>(vbase + sh_off[j], vec, bf16, vf[u]);
        } else {
#pragma unroll
          for (int e = 0; e < kDpl; ++e) vf[u][e] = 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll3; ++u) {
        const int j = jb + u * kWarps;
        if (j >= n) continue;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float p = sh_s[g * kChunk + j];
#pragma unroll
          for (int e = 0; e < kDpl; ++e) acc[g][e] = fmaf(p, vf[u][e], acc[g][e]);
        }
      }
    }
    __syncthreads();  // the next chunk (or the reduction below) overwrites sh_s and sh_off
  }

  float* red = sh_s;
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int e = 0; e < kDpl; ++e) red[(warp * G + g) * HD + lane * kDpl + e] = acc[g][e];
  }
  __syncthreads();
  const int64_t slot_head =
      static_cast<int64_t>(blockIdx.x) * heads + static_cast<int64_t>(kvh) * G;
  for (int x = threadIdx.x; x < G * HD; x += kThreads) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += red[w * G * HD + x];
    part_acc[slot_head * HD + x] = sum;  // x = g·HD + d: head slot_head + g, dim d
  }
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (threadIdx.x == g) {
      part_ml[(slot_head + g) * 2] = m_run[g];
      part_ml[(slot_head + g) * 2 + 1] = l_run[g];
    }
  }
}

// Block (x = a query of the decode-path sequences, y = a group of kWarps heads), a warp per head:
// out = Σ e^(m_s − M)·acc_s / L, L = Σ e^(m_s − M)·l_s, lse = M + log L over the query's splits.
// Lanes compute 32 splits' weights at once; the weighted sums then walk those splits with the
// weights shuffled out, so the partial loads of consecutive splits are in flight together.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(const SeqDesc* __restrict__ descs, const int32_t* __restrict__ query_seq,
                 const float* __restrict__ part_acc, const float* __restrict__ part_ml, int heads,
                 int split, int64_t out_stride, float* __restrict__ out) {
  constexpr int kDpl = HD / 32;
  __shared__ SeqDesc sd;
  if (threadIdx.x == 0) sd = descs[query_seq[blockIdx.x]];
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int h = static_cast<int>(blockIdx.y) * kWarps + warp;
  if (h >= heads) return;  // warp-uniform; no block barrier follows
  const int32_t i = static_cast<int32_t>(blockIdx.x) - sd.query_base;
  if (i >= sd.num_queries) return;  // a padded row of a graph's bucket (no query)
  const int32_t splits = (attended_span(sd, sd.first_pos + i).count + split - 1) / split;
  const int64_t slot0 = static_cast<int64_t>(sd.block_base) + static_cast<int64_t>(i) * sd.nsplit;

  float m = kNegInf;
  for (int s = lane; s < splits; s += 32) m = fmaxf(m, part_ml[((slot0 + s) * heads + h) * 2]);
  m = warp_max(m);  // finite: every query has a key in its first split
  float l = 0.0f, o[kDpl] = {};
  for (int s0 = 0; s0 < splits; s0 += 32) {
    float w = 0.0f;
    if (s0 + lane < splits) {
      const int64_t sh = (slot0 + s0 + lane) * heads + h;
      w = expf(part_ml[sh * 2] - m);
      l = fmaf(w, part_ml[sh * 2 + 1], l);
    }
    const int count = imin(32, splits - s0);  // warp-uniform: the shuffles see every lane
#pragma unroll 8
    for (int k = 0; k < count; ++k) {
      const float wk = __shfl_sync(kFullMask, w, k);
      const float* a = part_acc + ((slot0 + s0 + k) * heads + h) * HD + lane * kDpl;
#pragma unroll
      for (int e = 0; e < kDpl; ++e) o[e] = fmaf(wk, a[e], o[e]);
    }
  }
  l = warp_sum(l);
  const float inv = 1.0f / l;
  float* dst = out + (sd.first_row + i) * out_stride + static_cast<int64_t>(h) * HD + lane * kDpl;
#pragma unroll
  for (int e = 0; e < kDpl; ++e) dst[e] = o[e] * inv;
  if (lane == 0 && sd.lse != nullptr) sd.lse[static_cast<int64_t>(i) * heads + h] = m + logf(l);
}

struct SplitArgs {
  dim3 grid;
  cudaStream_t stream;
  const float* q;
  const SeqDesc* descs;
  const int32_t* block_seq;
  const int32_t* tables;
  int64_t q_stride;
  int heads;
  float scale;
  int split;
  float* part_acc;
  float* part_ml;
};

template <int HD, int G>
struct SplitLaunch {
  static void run(const SplitArgs& a) {
    split_kernel<HD, G><<<a.grid, kThreads, 0, a.stream>>>(a.q, a.descs, a.block_seq, a.tables,
                                                           a.q_stride, a.heads, a.scale, a.split,
                                                           a.part_acc, a.part_ml);
  }
};

// The split kernel, then the merge kernel (grid: queries × head groups), on a.stream.
void launch_split_merge(const SplitArgs& a, int head_dim, int group, const dim3& merge_grid,
                        const int32_t* query_seq, int64_t out_stride, float* out) {
  dispatch<SplitLaunch>(head_dim, group, a);
  LS_CUDA_LAUNCHED();
  if (head_dim == 64) {
    merge_kernel<64><<<merge_grid, kThreads, 0, a.stream>>>(
        a.descs, query_seq, a.part_acc, a.part_ml, a.heads, a.split, out_stride, out);
  } else {
    merge_kernel<128><<<merge_grid, kThreads, 0, a.stream>>>(
        a.descs, query_seq, a.part_acc, a.part_ml, a.heads, a.split, out_stride, out);
  }
  LS_CUDA_LAUNCHED();
}

// The decode-path work of one attention call: descriptors, the sequence of each split block and
// of each query, the packed block tables, and the key split.
struct GenericPlan {
  std::vector<SeqDesc> descs;
  std::vector<int32_t> block_seq, query_seq, tables;
  std::vector<int32_t> max_keys;  // per desc: keys of its last query
  int32_t split = 0;
};

// Split size: the largest power of two ≥ kMinSplit whose grid still has ≥ 4 blocks per SM (so a
// few long decodes fill the GPU); small splits cost only partials and merge work.
int32_t choose_split(const GenericPlan& plan, int kv_heads, int num_sms) {
  int32_t longest = 1;
  for (int32_t k : plan.max_keys) longest = std::max(longest, k);
  auto blocks = [&](int64_t split) {
    int64_t total = 0;
    for (size_t s = 0; s < plan.descs.size(); ++s) {
      total += plan.descs[s].num_queries * ((plan.max_keys[s] + split - 1) / split);
    }
    return total * kv_heads;
  };
  const int64_t target = 4 * static_cast<int64_t>(std::max(num_sms, 1));
  int64_t split = kMinSplit;
  while (split < longest && blocks(split * 2) >= target) split *= 2;
  return static_cast<int32_t>(split);
}

// Fills `plan` with the sequences of `seqs` that take the decode path.
void plan_generic(std::span<const AttentionSeq> seqs, const AttentionShape& shape, int num_sms,
                  GenericPlan& plan) {
  plan.descs.clear();
  plan.block_seq.clear();
  plan.query_seq.clear();
  plan.tables.clear();
  plan.max_keys.clear();
  for (const AttentionSeq& seq : seqs) {
    if (seq.num_queries <= 0 || takes_prefill_path(seq)) continue;
    SeqDesc d = describe(seq.kv, shape.kv_type, "attention");
    if (d.kind == kKindRing && seq.num_queries > 1 &&
        seq.first_pos + seq.num_queries > d.sink + d.window) {
      throw std::invalid_argument(
          "CUDA attention: several queries on a ring whose window has wrapped");
    }
    d.lse = seq.lse;
    d.first_row = seq.first_row;
    d.num_queries = seq.num_queries;
    d.first_pos = seq.first_pos;
    const int32_t last = seq.first_pos + seq.num_queries - 1;
    if (d.kind == kKindPaged || (d.kind == kKindRing && d.block_size > 0)) {
      // The pages up to the last token's row (a ring's rows stop at sink + window).
      const int32_t last_row = d.kind == kKindRing ? std::min(last, d.sink + d.window - 1) : last;
      d.table_offset = static_cast<int32_t>(plan.tables.size());
      plan.tables.insert(plan.tables.end(), seq.kv.block_table,
                         seq.kv.block_table + last_row / d.block_size + 1);
    }
    plan.max_keys.push_back(attended_span(d, last).count);  // grows with the position
    plan.descs.push_back(d);
  }
  if (plan.descs.empty()) return;
  plan.split = choose_split(plan, shape.kv_heads, num_sms);
  int64_t blocks = 0, queries = 0;
  for (size_t s = 0; s < plan.descs.size(); ++s) {
    SeqDesc& d = plan.descs[s];
    d.nsplit = (plan.max_keys[s] + plan.split - 1) / plan.split;
    d.block_base = static_cast<int32_t>(blocks);
    d.query_base = static_cast<int32_t>(queries);
    blocks += static_cast<int64_t>(d.num_queries) * d.nsplit;
    queries += d.num_queries;
    if (blocks > std::numeric_limits<int32_t>::max()) {
      throw std::invalid_argument("CUDA attention: too many queries × keys in one call");
    }
    plan.block_seq.insert(plan.block_seq.end(), static_cast<size_t>(d.num_queries) * d.nsplit,
                          static_cast<int32_t>(s));
    plan.query_seq.insert(plan.query_seq.end(), static_cast<size_t>(d.num_queries),
                          static_cast<int32_t>(s));
  }
}

// Byte offsets of the sections of the staged buffer (each 16-byte aligned).
struct StagingLayout {
  size_t descs = 0, block_seq = 0, query_seq = 0, tables = 0, total = 0;
};

StagingLayout staging_layout(const GenericPlan& plan) {
  auto align = [](size_t x) { return (x + 15) / 16 * 16; };
  StagingLayout l;
  l.descs = 0;
  l.block_seq = align(l.descs + plan.descs.size() * sizeof(SeqDesc));
  l.query_seq = align(l.block_seq + plan.block_seq.size() * sizeof(int32_t));
  l.tables = align(l.query_seq + plan.query_seq.size() * sizeof(int32_t));
  l.total = align(l.tables + plan.tables.size() * sizeof(int32_t));
  return l;
}

}  // namespace

struct CudaAttention::Impl {
  explicit Impl(CudaContext& c) : ctx(c), part_acc(c), part_ml(c) {}

  CudaContext& ctx;
  GenericPlan plan;                 // reused: no host allocation per decode step after warm-up
  std::vector<uint8_t> host;        // the packed staging bytes
  DeviceScratch staged;             // their device copy
  DeviceScratch part_acc, part_ml;  // read by recorded launches: retired, not freed, on growth
  DeviceScratch ratio_parts;

  int num_sms() const { return ctx.num_sms > 0 ? ctx.num_sms : 132; }

  void generic(const float* q, const AttentionShape& shape, int group, float* out);
};

void CudaAttention::Impl::generic(const float* q, const AttentionShape& shape, int group,
                                  float* out) {
  const StagingLayout layout = staging_layout(plan);
  host.assign(layout.total, 0);
  auto put = [&](size_t offset, const auto& v) {
    if (!v.empty()) std::memcpy(host.data() + offset, v.data(), v.size() * sizeof(v[0]));
  };
  put(layout.descs, plan.descs);
  put(layout.block_seq, plan.block_seq);
  put(layout.query_seq, plan.query_seq);
  put(layout.tables, plan.tables);
  uint8_t* device = staged.get<uint8_t>(static_cast<int64_t>(layout.total));
  ctx.upload_small(device, host.data(), static_cast<int64_t>(layout.total));

  const auto* descs = reinterpret_cast<const SeqDesc*>(device + layout.descs);
  const auto* block_seq = reinterpret_cast<const int32_t*>(device + layout.block_seq);
  const auto* query_seq = reinterpret_cast<const int32_t*>(device + layout.query_seq);
  const auto* tables = reinterpret_cast<const int32_t*>(device + layout.tables);
  const int64_t blocks = static_cast<int64_t>(plan.block_seq.size());
  const int64_t slots = blocks * shape.heads;
  float* acc = part_acc.get<float>(slots * shape.head_dim);
  float* ml = part_ml.get<float>(slots * 2);

  SplitArgs a{dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(shape.kv_heads)),
              ctx.stream,
              q,
              descs,
              block_seq,
              tables,
              shape.q_stride,
              shape.heads,
              shape.scale,
              plan.split,
              acc,
              ml};
  const dim3 merge_grid(static_cast<unsigned>(plan.query_seq.size()),
                        static_cast<unsigned>((shape.heads + kWarps - 1) / kWarps));
  launch_split_merge(a, shape.head_dim, group, merge_grid, query_seq, shape.out_stride, out);
}

CudaAttention::CudaAttention(CudaContext& ctx) : impl_(std::make_unique<Impl>(ctx)) {}

CudaAttention::~CudaAttention() = default;

void CudaAttention::attention(const float* q, std::span<const AttentionSeq> seqs,
                              const AttentionShape& shape, float* out) {
  const int group = check_shape(shape, "attention");
  Impl& m = *impl_;
  plan_generic(seqs, shape, m.num_sms(), m.plan);  // validates every view before any work
  if (!m.plan.descs.empty()) m.generic(q, shape, group, out);
  for (const AttentionSeq& seq : seqs) {
    if (takes_prefill_path(seq)) flash_prefill(m.ctx, q, seq, shape, group, out);
  }
}

bool CudaAttention::record_decode(const float* q, std::span<const AttentionSeq> seqs,
                                  const AttentionShape& shape, float* out, StepRecorder& recorder) {
  const int group = check_shape(shape, "attention");
  Impl& m = *impl_;
  const int64_t rows = recorder.bucket_rows();
  if (seqs.empty() || static_cast<int64_t>(seqs.size()) > rows) return false;
  std::vector<SeqDesc>& descs = m.plan.descs;
  descs.clear();
  int32_t max_keys = 1, max_pages = 1;
  for (const AttentionSeq& seq : seqs) {
    if (seq.num_queries != 1 || takes_prefill_path(seq)) return false;
    SeqDesc d = describe(seq.kv, shape.kv_type, "attention");
    d.lse = seq.lse;
    d.first_row = seq.first_row;
    d.num_queries = 1;
    d.first_pos = seq.first_pos;
    max_keys = std::max(max_keys, attended_span(d, seq.first_pos).count);
    if (d.kind == kKindPaged || (d.kind == kKindRing && d.block_size > 0)) {
      const int32_t last_row =
          d.kind == kKindRing ? std::min(seq.first_pos, d.sink + d.window - 1) : seq.first_pos;
      max_pages = std::max(max_pages, last_row / d.block_size + 1);
    }
    descs.push_back(d);
  }
  // Fixed per bucket: rows × splits split blocks (a row's splits past its keys, and padded rows,
  // exit at once), tables of table_capacity pages per row.
  const GraphAttentionGrid grid =
      graph_attention_grid(rows, max_keys, shape.kv_heads, m.num_sms(), kMinSplit);
  const auto table_capacity = static_cast<int32_t>(pow2_at_least(max_pages));
  const int64_t blocks = rows * grid.splits;
  if (blocks > std::numeric_limits<int32_t>::max() / std::max(shape.heads, 1)) return false;
  auto align = [](size_t x) { return (x + 15) / 16 * 16; };
  const size_t descs_at = 0;
  const size_t block_seq_at = align(descs_at + static_cast<size_t>(rows) * sizeof(SeqDesc));
  const size_t query_seq_at = align(block_seq_at + static_cast<size_t>(blocks) * sizeof(int32_t));
  const size_t tables_at = align(query_seq_at + static_cast<size_t>(rows) * sizeof(int32_t));
  const size_t total =
      align(tables_at + static_cast<size_t>(rows) * table_capacity * sizeof(int32_t));
  m.host.assign(total, 0);
  auto* host_descs = reinterpret_cast<SeqDesc*>(m.host.data() + descs_at);
  auto* block_seq = reinterpret_cast<int32_t*>(m.host.data() + block_seq_at);
  auto* query_seq = reinterpret_cast<int32_t*>(m.host.data() + query_seq_at);
  auto* tables = reinterpret_cast<int32_t*>(m.host.data() + tables_at);
  for (int64_t r = 0; r < rows; ++r) {
    SeqDesc d{};  // a padded row: no query
    if (r < static_cast<int64_t>(descs.size())) {
      d = descs[static_cast<size_t>(r)];
      const AttentionSeq& seq = seqs[static_cast<size_t>(r)];
      if (d.kind == kKindPaged || (d.kind == kKindRing && d.block_size > 0)) {
        const int32_t last_row =
            d.kind == kKindRing ? std::min(seq.first_pos, d.sink + d.window - 1) : seq.first_pos;
        std::copy_n(seq.kv.block_table, last_row / d.block_size + 1, tables + r * table_capacity);
        d.table_offset = static_cast<int32_t>(r * table_capacity);
      }
    }
    d.nsplit = grid.splits;
    d.block_base = static_cast<int32_t>(r * grid.splits);
    d.query_base = static_cast<int32_t>(r);
    host_descs[r] = d;
    std::fill_n(block_seq + r * grid.splits, grid.splits, static_cast<int32_t>(r));
    query_seq[r] = static_cast<int32_t>(r);
  }
  const int64_t at = recorder.stage(m.host.data(), static_cast<int64_t>(total), 0);
  const int64_t slots = blocks * shape.heads;
  float* acc = m.part_acc.get<float>(slots * shape.head_dim);
  float* ml = m.part_ml.get<float>(slots * 2);
  const cudaStream_t stream = m.ctx.stream;
  const dim3 split_grid(static_cast<unsigned>(blocks), static_cast<unsigned>(shape.kv_heads));
  const dim3 merge_grid(static_cast<unsigned>(rows),
                        static_cast<unsigned>((shape.heads + kWarps - 1) / kWarps));
  const int heads = shape.heads, head_dim = shape.head_dim, split = grid.split;
  const int64_t q_stride = shape.q_stride, out_stride = shape.out_stride;
  const float scale = shape.scale;
  constexpr uint32_t kLaunchDecodeAttention = 100;
  recorder.signature().put(kLaunchDecodeAttention, q, out, at, total, rows, grid.splits, split,
                           table_capacity, shape.kv_heads, heads, head_dim, group, q_stride,
                           out_stride, scale, acc, ml);
  recorder.add([=](const uint8_t* staged) {
    const uint8_t* base = staged + at;
    const auto* d = reinterpret_cast<const SeqDesc*>(base + descs_at);
    SplitArgs a{split_grid,
                stream,
                q,
                d,
                reinterpret_cast<const int32_t*>(base + block_seq_at),
                reinterpret_cast<const int32_t*>(base + tables_at),
                q_stride,
                heads,
                scale,
                split,
                acc,
                ml};
    launch_split_merge(a, head_dim, group, merge_grid,
                       reinterpret_cast<const int32_t*>(base + query_seq_at), out_stride, out);
  });
  return true;
}

float CudaAttention::lazy_ratio(const float* q, const float* lse, const KvView& kv, int32_t n,
                                int32_t w_last, int32_t sink, int32_t window,
                                const AttentionShape& shape, LazyScore score, float* head_ratios) {
  Impl& m = *impl_;
  return device_lazy_ratio(m.ctx, m.staged, m.ratio_parts, q, lse, kv, n, w_last, sink, window,
                           shape, score, head_ratios);
}

}  // namespace lightserve::kernels::cuda
