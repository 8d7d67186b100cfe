// LLaMA configuration and tensor binding. Shapes come from the file's metadata and are checked
// against the tensors, so the forward pass can index weights without further checks.
#include "model/config.h"

#include <cmath>
#include <string_view>

namespace lightserve::model {
namespace {

// Upper bounds far beyond any real LLaMA-family model; they keep products such as
// hidden * vocab or layers * context inside int64 and reject nonsense early.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHidden = 65536;
constexpr int64_t kMaxFfn = int64_t{1} << 20;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxVocab = int64_t{1} << 22;
constexpr int64_t kMaxContext = int64_t{1} << 24;

// Architectures whose GGUF layout this file understands. llama.cpp writes Mistral 7B (and the
// older Mistral models) as `llama`; its `mistral3` (Mistral Small 3.x) scales attention by
// position and is not one of them.
constexpr std::string_view kSupportedArchitectures =
    "llama (Llama-2, Llama-3, Llama-3.1, Mistral 7B, SmolLM2) and qwen2 (Qwen2, Qwen2.5)";

// Reads an integer key that must lie in [1, max]. nullopt value + ok when absent and optional.
Result<std::optional<int64_t>> read_dim(const GgufFile& file, const std::string& key, int64_t max,
                                        bool required) {
  auto value = file.get_int(key);
  if (!value.ok()) return value.error();
  if (!value.value()) {
    if (required) return Error{file.path() + ": missing metadata key " + key};
    return value;
  }
  const int64_t v = *value.value();
  if (v < 1 || v > max) {
    return Error{file.path() + ": metadata key " + key + " is " + std::to_string(v) +
                 "; must be between 1 and " + std::to_string(max)};
  }
  return value;
}

Result<float> read_positive_float(const GgufFile& file, const std::string& key, double fallback,
                                  double max) {
  auto value = file.get_float(key);
  if (!value.ok()) return value.error();
  const double v = value.value().value_or(fallback);
  if (!std::isfinite(v) || v <= 0.0 || v > max) {
    return Error{file.path() + ": metadata key " + key + " is " + std::to_string(v) +
                 "; must be positive and at most " + std::to_string(max)};
  }
  return static_cast<float>(v);
}

// Finds `name` and checks its shape; norms must also be F32. Matrices may use any type the
// reader accepted, which already guarantees dims[0] is a whole number of blocks; it is checked
// again here because the kernels index rows by block.
Result<const GgufTensorInfo*> bind_one(const GgufFile& file, const std::string& name,
                                       const std::vector<int64_t>& expected, bool must_be_f32) {
  const GgufTensorInfo* info = file.tensor(name);
  if (info == nullptr) return Error{file.path() + ": missing tensor " + name};
  if (info->dims != expected) {
    return Error{file.path() + ": tensor " + name + " has shape " + format_dims(info->dims) +
                 ", expected " + format_dims(expected)};
  }
  const auto& traits = kernels::traits(info->type);
  if (must_be_f32 && info->type != kernels::DType::kF32) {
    return Error{file.path() + ": tensor " + name + " has type " + std::string(traits.name) +
                 ", expected F32"};
  }
  if (info->dims[0] % traits.block_elements != 0) {
    return Error{file.path() + ": tensor " + name + " has type " + std::string(traits.name) +
                 " but its input dimension " + std::to_string(info->dims[0]) +
                 " is not a whole number of " + std::to_string(traits.block_elements) +
                 "-value blocks"};
  }
  return info;
}

}  // namespace

Result<LlamaConfig> LlamaConfig::from_gguf(const GgufFile& file) {
  const std::string& path = file.path();
  LlamaConfig config;

  auto architecture = file.get_string("general.architecture");
  if (!architecture.ok()) return architecture.error();
  if (!architecture.value()) return Error{path + ": missing metadata key general.architecture"};
  config.architecture = *architecture.value();
  if (config.architecture != "llama" && config.architecture != "qwen2") {
    return Error{path + ": architecture '" + config.architecture +
                 "' (general.architecture) is not supported; lightserve runs " +
                 std::string(kSupportedArchitectures)};
  }
  // llama.cpp: qwen2 has Q/K/V biases and rotates NEOX pairs (its Q/K rows are not permuted
  // by convert_hf_to_gguf.py, unlike llama's).
  config.qkv_bias = config.architecture == "qwen2";
  config.rope_neox = config.architecture == "qwen2";
  auto name = file.get_string("general.name");
  if (!name.ok()) return name.error();
  config.name = name.value().value_or("");

  const std::string prefix = config.architecture + ".";
  // Reads a required dimension into `field`; returns from from_gguf on error.
#define LIGHTSERVE_READ_DIM(field, key, max)                           \
  do {                                                                 \
    auto v = read_dim(file, prefix + (key), (max), /*required=*/true); \
    if (!v.ok()) return v.error();                                     \
    (field) = static_cast<int32_t>(*v.value());                        \
  } while (0)
  LIGHTSERVE_READ_DIM(config.num_layers, "block_count", kMaxLayers);
  LIGHTSERVE_READ_DIM(config.context_length, "context_length", kMaxContext);
  LIGHTSERVE_READ_DIM(config.hidden_dim, "embedding_length", kMaxHidden);
  LIGHTSERVE_READ_DIM(config.ffn_dim, "feed_forward_length", kMaxFfn);
  LIGHTSERVE_READ_DIM(config.num_heads, "attention.head_count", kMaxHeads);
#undef LIGHTSERVE_READ_DIM

  auto kv_heads = read_dim(file, prefix + "attention.head_count_kv", kMaxHeads, false);
  if (!kv_heads.ok()) return kv_heads.error();
  config.num_kv_heads = static_cast<int32_t>(kv_heads.value().value_or(config.num_heads));

  if (config.hidden_dim % config.num_heads != 0) {
    return Error{path + ": " + prefix + "embedding_length " + std::to_string(config.hidden_dim) +
                 " is not divisible by " + prefix + "attention.head_count " +
                 std::to_string(config.num_heads)};
  }
  if (config.num_heads % config.num_kv_heads != 0) {
    return Error{path + ": " + prefix + "attention.head_count " + std::to_string(config.num_heads) +
                 " is not divisible by " + prefix + "attention.head_count_kv " +
                 std::to_string(config.num_kv_heads)};
  }
  config.head_dim = config.hidden_dim / config.num_heads;
  if (config.head_dim % 2 != 0) {
    return Error{path + ": head dimension " + std::to_string(config.head_dim) + " (" + prefix +
                 "embedding_length / head_count) is odd; RoPE rotates pairs"};
  }
  auto rope_dims = read_dim(file, prefix + "rope.dimension_count", kMaxHidden, false);
  if (!rope_dims.ok()) return rope_dims.error();
  if (rope_dims.value() && *rope_dims.value() != config.head_dim) {
    return Error{path + ": " + prefix + "rope.dimension_count is " +
                 std::to_string(*rope_dims.value()) + ", but the head dimension is " +
                 std::to_string(config.head_dim) + "; partial rotary embeddings are not supported"};
  }

  auto rope_base = read_positive_float(file, prefix + "rope.freq_base", 10000.0, 1e12);
  if (!rope_base.ok()) return rope_base.error();
  config.rope_freq_base = rope_base.value();
  // Linear / YaRN / LongRoPE context extension changes every position's rotation: refuse it
  // rather than serve wrong numbers. Llama-3.1's scaling has no type key: its per-frequency
  // factors come as the tensor rope_freqs.weight (as llama.cpp's llama).
  auto scaling = file.get_string(prefix + "rope.scaling.type");
  if (!scaling.ok()) return scaling.error();
  if (scaling.value() && *scaling.value() != "none") {
    return Error{path + ": RoPE scaling '" + *scaling.value() + "' (" + prefix +
                 "rope.scaling.type) is not supported; lightserve supports none and Llama-3.1's "
                 "frequency factors (tensor rope_freqs.weight)"};
  }
  if (file.tensor("rope_freqs.weight") != nullptr) {
    if (config.architecture != "llama") {
      return Error{path +
                   ": tensor rope_freqs.weight (RoPE frequency factors) is only "
                   "supported for architecture llama, not " +
                   config.architecture};
    }
    config.rope_freq_factors = true;
  }
  auto eps = read_positive_float(file, prefix + "attention.layer_norm_rms_epsilon", 1e-5, 1.0);
  if (!eps.ok()) return eps.error();
  config.rms_norm_eps = eps.value();

  // Vocabulary: the explicit key when present, else the tokenizer's token list; when both are
  // present they must agree, or token ids and embedding rows would not correspond.
  auto vocab = read_dim(file, prefix + "vocab_size", kMaxVocab, false);
  if (!vocab.ok()) return vocab.error();
  int64_t num_tokens = -1;
  if (const GgufValue* tokens = file.find("tokenizer.ggml.tokens")) {
    const auto* array = std::get_if<GgufArray>(&tokens->data);
    if (array == nullptr || array->element_type != GgufValueType::kString) {
      std::string actual(to_string(tokens->type));
      if (array != nullptr) actual += " of " + std::string(to_string(array->element_type));
      return Error{path + ": metadata key tokenizer.ggml.tokens is " + actual +
                   ", expected an array of strings"};
    }
    num_tokens = static_cast<int64_t>(array->values.size());
  }
  if (vocab.value()) {
    if (num_tokens >= 0 && num_tokens != *vocab.value()) {
      return Error{path + ": " + prefix + "vocab_size is " + std::to_string(*vocab.value()) +
                   " but tokenizer.ggml.tokens has " + std::to_string(num_tokens) + " entries"};
    }
    config.vocab_size = static_cast<int32_t>(*vocab.value());
  } else if (num_tokens >= 0) {
    if (num_tokens < 1 || num_tokens > kMaxVocab) {
      return Error{path + ": tokenizer.ggml.tokens has " + std::to_string(num_tokens) +
                   " entries; the vocabulary must hold between 1 and " + std::to_string(kMaxVocab)};
    }
    config.vocab_size = static_cast<int32_t>(num_tokens);
  } else {
    return Error{path + ": cannot tell the vocabulary size: neither " + prefix +
                 "vocab_size nor tokenizer.ggml.tokens is present"};
  }

  config.tied_embeddings = file.tensor("output.weight") == nullptr;
  return config;
}

Result<LlamaTensors> LlamaTensors::bind(const GgufFile& file, const LlamaConfig& config) {
  const int64_t hidden = config.hidden_dim;
  const int64_t q_dim = int64_t{config.num_heads} * config.head_dim;
  const int64_t kv_dim = int64_t{config.num_kv_heads} * config.head_dim;
  const int64_t ffn = config.ffn_dim;
  const int64_t vocab = config.vocab_size;

  LlamaTensors out;
  // Binds one tensor into `slot`; returns from bind() on error.
#define LIGHTSERVE_BIND(slot, name, expected, must_be_f32)    \
  do {                                                        \
    auto t = bind_one(file, (name), expected, (must_be_f32)); \
    if (!t.ok()) return t.error();                            \
    (slot) = t.value();                                       \
  } while (0)
  LIGHTSERVE_BIND(out.token_embd, "token_embd.weight", (std::vector<int64_t>{hidden, vocab}),
                  false);
  LIGHTSERVE_BIND(out.output_norm, "output_norm.weight", (std::vector<int64_t>{hidden}), true);
  if (config.rope_freq_factors) {
    LIGHTSERVE_BIND(out.rope_freqs, "rope_freqs.weight",
                    (std::vector<int64_t>{config.head_dim / 2}), true);
  }
  // Biases lightserve has no use for would be silently dropped: refuse them by name.
  for (const char* name : {"output.bias", "blk.0.attn_output.bias", "blk.0.ffn_up.bias"}) {
    if (file.tensor(name) != nullptr) {
      return Error{file.path() + ": tensor " + name + " (a bias term " + config.architecture +
                   " models do not have) is not supported"};
    }
  }
  if (file.tensor("output.weight") != nullptr) {
    LIGHTSERVE_BIND(out.output, "output.weight", (std::vector<int64_t>{hidden, vocab}), false);
  } else {
    out.output = out.token_embd;  // tied embeddings
  }

  out.layers.resize(static_cast<size_t>(config.num_layers));
  for (int32_t i = 0; i < config.num_layers; ++i) {
    LayerTensors& layer = out.layers[static_cast<size_t>(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    LIGHTSERVE_BIND(layer.attn_norm, p + "attn_norm.weight", (std::vector<int64_t>{hidden}), true);
    LIGHTSERVE_BIND(layer.attn_q, p + "attn_q.weight", (std::vector<int64_t>{hidden, q_dim}),
                    false);
    LIGHTSERVE_BIND(layer.attn_k, p + "attn_k.weight", (std::vector<int64_t>{hidden, kv_dim}),
                    false);
    LIGHTSERVE_BIND(layer.attn_v, p + "attn_v.weight", (std::vector<int64_t>{hidden, kv_dim}),
                    false);
    if (config.qkv_bias) {
      LIGHTSERVE_BIND(layer.attn_q_bias, p + "attn_q.bias", (std::vector<int64_t>{q_dim}), true);
      LIGHTSERVE_BIND(layer.attn_k_bias, p + "attn_k.bias", (std::vector<int64_t>{kv_dim}), true);
      LIGHTSERVE_BIND(layer.attn_v_bias, p + "attn_v.bias", (std::vector<int64_t>{kv_dim}), true);
    } else if (file.tensor(p + "attn_q.bias") != nullptr) {
      return Error{file.path() + ": tensor " + p + "attn_q.bias: Q/K/V biases are not part of " +
                   config.architecture + " (qwen2 models have them)"};
    }
    LIGHTSERVE_BIND(layer.attn_output, p + "attn_output.weight",
                    (std::vector<int64_t>{q_dim, hidden}), false);
    LIGHTSERVE_BIND(layer.ffn_norm, p + "ffn_norm.weight", (std::vector<int64_t>{hidden}), true);
    LIGHTSERVE_BIND(layer.ffn_gate, p + "ffn_gate.weight", (std::vector<int64_t>{hidden, ffn}),
                    false);
    LIGHTSERVE_BIND(layer.ffn_up, p + "ffn_up.weight", (std::vector<int64_t>{hidden, ffn}), false);
    LIGHTSERVE_BIND(layer.ffn_down, p + "ffn_down.weight", (std::vector<int64_t>{ffn, hidden}),
                    false);
  }
#undef LIGHTSERVE_BIND
  return out;
}

}  // namespace lightserve::model
