// A small GGUF writer for tests: builds valid files with any metadata and tensors, and lets a
// test break any field (magic, version, counts, raw value types, dims, type ids, offsets) to
// produce the bad-file corpus. Not a production writer: everything is kept in memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "model/gguf.h"

namespace lightserve::model::gguf_testing {

// The default model for tests: $LIGHTSERVE_TEST_MODEL when set, else the build's definition.
inline std::string test_model_path() {
  if (const char* env = std::getenv("LIGHTSERVE_TEST_MODEL"); env != nullptr && *env != '\0') {
    return env;
  }
#ifdef LIGHTSERVE_TEST_MODEL
  return LIGHTSERVE_TEST_MODEL;
#else
  return "models/SmolLM2-135M-Instruct.Q4_1.gguf";
#endif
}

// Little-endian byte sink.
class Bytes {
 public:
  template <typename T>
  Bytes& put(T value) {
    const size_t at = data.size();
    data.resize(at + sizeof(T));
    std::memcpy(data.data() + at, &value, sizeof(T));
    return *this;
  }
  Bytes& put_string(const std::string& s) {
    put<uint64_t>(s.size());
    data.insert(data.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& append(const std::vector<uint8_t>& more) {
    data.insert(data.end(), more.begin(), more.end());
    return *this;
  }
  std::vector<uint8_t> data;
};

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> dims;        // ggml order, written verbatim (may be invalid on purpose)
  uint32_t type_id = 0;              // ggml type id, written verbatim
  std::optional<uint64_t> offset;    // default: packed after the previous tensor, aligned
  std::optional<uint32_t> num_dims;  // default: dims.size()
  std::vector<uint8_t> data;         // default: zeros of the size implied by dims and type
};

class GgufWriter {
 public:
  std::string magic = "GGUF";
  uint32_t version = 3;
  uint64_t alignment = 32;  // used to lay out data; set_alignment() also writes the key
  std::optional<uint64_t> tensor_count_override;
  std::optional<uint64_t> metadata_count_override;

  // Metadata: `payload` is the encoded value after its type id. Replaces an existing key.
  GgufWriter& set_raw(const std::string& key, uint32_t type, std::vector<uint8_t> payload) {
    for (auto& entry : metadata_) {
      if (entry.key == key) {
        entry.type = type;
        entry.payload = std::move(payload);
        return *this;
      }
    }
    metadata_.push_back({key, type, std::move(payload)});
    return *this;
  }
  // Appends even if the key exists (for the duplicate-key case).
  GgufWriter& add_raw(const std::string& key, uint32_t type, std::vector<uint8_t> payload) {
    metadata_.push_back({key, type, std::move(payload)});
    return *this;
  }
  GgufWriter& remove_key(const std::string& key) {
    std::erase_if(metadata_, [&](const Entry& e) { return e.key == key; });
    return *this;
  }

  template <typename T>
  GgufWriter& set_scalar(const std::string& key, GgufValueType type, T value) {
    return set_raw(key, static_cast<uint32_t>(type), Bytes().put<T>(value).data);
  }
  GgufWriter& set_u32(const std::string& key, uint32_t v) {
    return set_scalar(key, GgufValueType::kU32, v);
  }
  GgufWriter& set_i32(const std::string& key, int32_t v) {
    return set_scalar(key, GgufValueType::kI32, v);
  }
  GgufWriter& set_f32(const std::string& key, float v) {
    return set_scalar(key, GgufValueType::kF32, v);
  }
  GgufWriter& set_string(const std::string& key, const std::string& v) {
    return set_raw(key, static_cast<uint32_t>(GgufValueType::kString), Bytes().put_string(v).data);
  }
  GgufWriter& set_string_array(const std::string& key, const std::vector<std::string>& values) {
    Bytes b;
    b.put<uint32_t>(static_cast<uint32_t>(GgufValueType::kString)).put<uint64_t>(values.size());
    for (const auto& v : values) b.put_string(v);
    return set_raw(key, static_cast<uint32_t>(GgufValueType::kArray), b.data);
  }
  GgufWriter& set_i32_array(const std::string& key, const std::vector<int32_t>& values) {
    Bytes b;
    b.put<uint32_t>(static_cast<uint32_t>(GgufValueType::kI32)).put<uint64_t>(values.size());
    for (int32_t v : values) b.put(v);
    return set_raw(key, static_cast<uint32_t>(GgufValueType::kArray), b.data);
  }
  GgufWriter& set_alignment(uint64_t a) {
    alignment = a;
    return set_u32("general.alignment", static_cast<uint32_t>(a));
  }

  // Tensors.
  GgufWriter& add_tensor(TensorSpec spec) {
    tensors_.push_back(std::move(spec));
    return *this;
  }
  GgufWriter& add_tensor(const std::string& name, std::vector<uint64_t> dims, kernels::DType type) {
    return add_tensor(TensorSpec{name, std::move(dims), static_cast<uint32_t>(type), {}, {}, {}});
  }
  TensorSpec* find_tensor(const std::string& name) {
    for (auto& t : tensors_) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
  GgufWriter& remove_tensor(const std::string& name) {
    std::erase_if(tensors_, [&](const TensorSpec& t) { return t.name == name; });
    return *this;
  }

  // Bytes of a tensor's data: the explicit data, else zeros sized from dims and type (0 bytes
  // when the dims or type are invalid, as the reader rejects them before reading data).
  static uint64_t data_size(const TensorSpec& t) {
    if (!t.data.empty()) return t.data.size();
    const auto traits = kernels::dtype_traits(t.type_id);
    if (!traits || t.dims.empty()) return 0;
    uint64_t elements = 1;
    for (uint64_t d : t.dims) {
      if (d == 0 || d > (uint64_t{1} << 32) || __builtin_mul_overflow(elements, d, &elements)) {
        return 0;
      }
    }
    if (elements > (uint64_t{1} << 28)) return 0;  // never materialize absurd tensors
    const auto row = kernels::row_bytes(traits->type, static_cast<int64_t>(t.dims[0]));
    if (!row) return 0;
    return static_cast<uint64_t>(*row) * (elements / t.dims[0]);
  }

  std::vector<uint8_t> build() const {
    Bytes b;
    b.data.insert(b.data.end(), magic.begin(), magic.end());
    b.put<uint32_t>(version);
    b.put<uint64_t>(tensor_count_override.value_or(tensors_.size()));
    b.put<uint64_t>(metadata_count_override.value_or(metadata_.size()));
    for (const auto& e : metadata_) {
      b.put_string(e.key).put<uint32_t>(e.type).append(e.payload);
    }
    // Lay out the data: each tensor at the next aligned offset unless overridden.
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const auto& t : tensors_) {
      const uint64_t offset = t.offset.value_or(align(next));
      offsets.push_back(offset);
      if (!t.offset) next = offset + data_size(t);
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      b.put_string(t.name).put<uint32_t>(t.num_dims.value_or(static_cast<uint32_t>(t.dims.size())));
      for (uint64_t d : t.dims) b.put<uint64_t>(d);
      b.put<uint32_t>(t.type_id).put<uint64_t>(offsets[i]);
    }
    b.data.resize(align(b.data.size()), 0);
    const size_t data_start = b.data.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (tensors_[i].offset) continue;  // overridden offsets point wherever the test wants
      const uint64_t size = data_size(tensors_[i]);
      b.data.resize(std::max<size_t>(b.data.size(), data_start + offsets[i] + size), 0);
      if (!tensors_[i].data.empty()) {
        std::memcpy(b.data.data() + data_start + offsets[i], tensors_[i].data.data(), size);
      }
    }
    return b.data;
  }

 private:
  struct Entry {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> payload;
  };
  uint64_t align(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }

  std::vector<Entry> metadata_;
  std::vector<TensorSpec> tensors_;
};

// A complete, valid miniature LLaMA (2 layers, hidden 64, 4 heads of 16, 2 KV heads, ffn 128,
// vocab 32, tied embeddings) that tests then break one field at a time.
struct TinyLlama {
  uint32_t num_layers = 2;
  uint32_t hidden = 64;
  uint32_t num_heads = 4;
  uint32_t num_kv_heads = 2;
  uint32_t ffn = 128;
  uint32_t vocab = 32;
  uint32_t context = 256;
  kernels::DType matrix_type = kernels::DType::kQ4_1;
  bool tied = true;

  GgufWriter writer() const {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_string("general.name", "tiny");
    w.set_u32("llama.block_count", num_layers);
    w.set_u32("llama.context_length", context);
    w.set_u32("llama.embedding_length", hidden);
    w.set_u32("llama.feed_forward_length", ffn);
    w.set_u32("llama.attention.head_count", num_heads);
    w.set_u32("llama.attention.head_count_kv", num_kv_heads);
    w.set_f32("llama.rope.freq_base", 100000.0f);
    w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_u32("llama.rope.dimension_count", hidden / num_heads);
    std::vector<std::string> tokens;
    // Built by appending: GCC 12 gives a false -Wrestrict for "literal" + std::to_string().
    for (uint32_t i = 0; i < vocab; ++i) tokens.push_back(std::to_string(i).append("t"));
    w.set_string_array("tokenizer.ggml.tokens", tokens);

    const uint64_t head_dim = hidden / num_heads;
    const uint64_t q_dim = num_heads * head_dim;
    const uint64_t kv_dim = num_kv_heads * head_dim;
    using kernels::DType;
    w.add_tensor("token_embd.weight", {hidden, vocab}, DType::kQ8_0);
    w.add_tensor("output_norm.weight", {hidden}, DType::kF32);
    if (!tied) w.add_tensor("output.weight", {hidden, vocab}, matrix_type);
    for (uint32_t i = 0; i < num_layers; ++i) {
      const std::string p = std::string("blk.").append(std::to_string(i)).append(".");
      w.add_tensor(p + "attn_norm.weight", {hidden}, DType::kF32);
      w.add_tensor(p + "attn_q.weight", {hidden, q_dim}, matrix_type);
      w.add_tensor(p + "attn_k.weight", {hidden, kv_dim}, matrix_type);
      w.add_tensor(p + "attn_v.weight", {hidden, kv_dim}, matrix_type);
      w.add_tensor(p + "attn_output.weight", {q_dim, hidden}, matrix_type);
      w.add_tensor(p + "ffn_norm.weight", {hidden}, DType::kF32);
      w.add_tensor(p + "ffn_gate.weight", {hidden, ffn}, matrix_type);
      w.add_tensor(p + "ffn_up.weight", {hidden, ffn}, matrix_type);
      w.add_tensor(p + "ffn_down.weight", {ffn, hidden}, matrix_type);
    }
    return w;
  }
};

}  // namespace lightserve::model::gguf_testing
