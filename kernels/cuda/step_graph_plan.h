// The host-side arithmetic of the CUDA backend's decode-step graphs (cuda_graphs.h), free of CUDA
// headers so that the CPU tests check it (tests/kernels/step_graph_plan_test.cpp). Not a public
// header.
//
// A graph is valid for a step when the step issues exactly the launches it was captured from:
// same kernels, same grids, same scalar arguments, same device pointers. Everything that changes
// from step to step (token ids, positions, KV destinations, attention descriptors, page tables)
// is therefore data, staged at fixed offsets of one buffer and copied to the device once per
// step; what stays is the launches' signature (StepSignature), which a replay must match byte for
// byte. Sizes that would vary with the step's contents are rounded up to buckets so that the
// signature does not: rows to a power of two (padded rows compute harmless garbage that nothing
// reads), the queued K/V stores to a multiple of the rows, the attention's keys to a power of
// two (its split grid is sized for the bucket; blocks past a row's keys exit at once).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace lightserve::kernels::cuda {

// Smallest power of two ≥ v (v ≥ 1; 1 for v ≤ 1).
inline int64_t pow2_at_least(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// The rows a decode step of `rows` sequences runs with: the bucket (a power of two), or 0 when
// rows is not positive or the bucket would exceed max_rows (the step then runs as issued).
inline int64_t decode_bucket_rows(int64_t rows, int64_t max_rows) {
  if (rows <= 0) return 0;
  const int64_t bucket = pow2_at_least(rows);
  return bucket <= max_rows ? bucket : 0;
}

// Descriptors a graph-mode launch reserves for `count` of them in a step of `bucket_rows` rows:
// a multiple of the bucket, so that a decode's 2 K/V stores per sequence give 2 · bucket for
// every row count of the bucket (count ∈ (bucket, 2·bucket] → 2·bucket).
inline int64_t padded_count(int64_t count, int64_t bucket_rows) {
  if (count <= 0) return 0;
  if (bucket_rows <= 0) return count;
  return (count + bucket_rows - 1) / bucket_rows * bucket_rows;
}

// The split-K grid of the decode attention in a graph: every row of the bucket gets `splits`
// split blocks of `split` keys (the row's real keys use the first ceil(keys / split), the rest
// exit at once), with the keys rounded up to a power of two ≥ kMinKeys. The split is the eager
// path's rule (choose_split in cuda_attention.cu) applied to the bucket: the largest power of two
// ≥ min_split whose grid still has ≥ 4 blocks per SM.
struct GraphAttentionGrid {
  int32_t key_bucket = 0;  // keys rounded up
  int32_t split = 0;       // keys per split block
  int32_t splits = 0;      // split blocks per row
};

inline GraphAttentionGrid graph_attention_grid(int64_t bucket_rows, int32_t max_keys,
                                               int32_t kv_heads, int32_t num_sms,
                                               int32_t min_split) {
  constexpr int32_t kMinKeys = 256;
  GraphAttentionGrid g;
  g.key_bucket = static_cast<int32_t>(pow2_at_least(std::max(max_keys, kMinKeys)));
  const int64_t target = 4 * static_cast<int64_t>(std::max(num_sms, 1));
  auto blocks = [&](int64_t split) {
    return bucket_rows * ((g.key_bucket + split - 1) / split) * std::max(kv_heads, 1);
  };
  int64_t split = min_split;
  while (split < g.key_bucket && blocks(split * 2) >= target) split *= 2;
  g.split = static_cast<int32_t>(split);
  g.splits = static_cast<int32_t>((g.key_bucket + split - 1) / split);
  return g;
}

// The bytes that identify one step's launches, in order: each launch appends a kind and every
// value it bakes into the launch (pointers, sizes, grids, offsets of its staged data). Values
// are appended field by field (never a whole struct: padding bytes are indeterminate).
class StepSignature {
 public:
  void clear() { bytes_.clear(); }
  template <typename... T>
  void put(const T&... values) {
    (put_one(values), ...);
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  bool operator==(const StepSignature& other) const { return bytes_ == other.bytes_; }

 private:
  template <typename T>
  void put_one(const T& v) {
    static_assert(std::is_arithmetic_v<T> || std::is_pointer_v<T> || std::is_enum_v<T>,
                  "append scalar fields one by one");
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  std::vector<uint8_t> bytes_;
};

// Host bytes of one step, laid out at 16-byte aligned offsets: what the launches read from the
// device copy of it. stage() copies `bytes` and leaves the rest of `reserve` zero.
class StepStaging {
 public:
  void clear() { bytes_.clear(); }
  int64_t stage(const void* src, int64_t bytes, int64_t reserve) {
    reserve = std::max(reserve, bytes);
    const auto at = static_cast<int64_t>((bytes_.size() + 15) / 16 * 16);
    bytes_.resize(static_cast<size_t>(at + reserve), 0);
    if (bytes > 0) std::memcpy(bytes_.data() + at, src, static_cast<size_t>(bytes));
    return at;
  }
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  const uint8_t* data() const { return bytes_.data(); }
  uint8_t* data() { return bytes_.data(); }

 private:
  std::vector<uint8_t> bytes_;
};

// A bounded map from step signatures to graphs (Handle: the instantiated graph, or a null handle
// for a signature seen once and not captured yet), least recently used evicted first.
template <typename Handle>
class GraphCache {
 public:
  struct Entry {
    std::vector<uint8_t> signature;
    Handle handle{};
    bool failed = false;  // capture failed once: this signature runs eagerly
    uint64_t last_use = 0;
  };
  explicit GraphCache(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  // The entry of this signature, or null.
  Entry* find(const std::vector<uint8_t>& signature) {
    for (Entry& e : entries_) {
      if (e.signature.size() == signature.size() && e.signature == signature) {
        e.last_use = ++clock_;
        return &e;
      }
    }
    return nullptr;
  }
  // Adds an entry for `signature` (not present); when full, the least recently used entry goes
  // first and its handle is returned through *evicted (else *evicted is left alone).
  Entry& insert(const std::vector<uint8_t>& signature, Handle* evicted) {
    if (entries_.size() >= capacity_) {
      auto lru =
          std::min_element(entries_.begin(), entries_.end(),
                           [](const auto& a, const auto& b) { return a.last_use < b.last_use; });
      *evicted = lru->handle;
      entries_.erase(lru);
    }
    entries_.push_back(Entry{signature, Handle{}, false, ++clock_});
    return entries_.back();
  }
  // Every entry's handle (to destroy them), then none.
  std::vector<Handle> clear() {
    std::vector<Handle> handles;
    for (const Entry& e : entries_) handles.push_back(e.handle);
    entries_.clear();
    return handles;
  }
  size_t size() const { return entries_.size(); }

 private:
  size_t capacity_;
  std::vector<Entry> entries_;
  uint64_t clock_ = 0;
};

}  // namespace lightserve::kernels::cuda
