// LLaMA-family configuration, read from a model file's metadata (never hard-coded shapes), and
// the binding of the file's tensors to their roles, with every shape and type checked.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "model/gguf.h"

namespace lightserve::model {

struct LlamaConfig {
  std::string architecture;  // "llama" or "qwen2"
  std::string name;          // general.name, when present
  int32_t num_layers = 0;
  int32_t hidden_dim = 0;  // embedding_length
  int32_t ffn_dim = 0;     // feed_forward_length
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;  // hidden_dim / num_heads (rope.dimension_count must equal it)
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  float rope_freq_base = 10000.0f;
  float rms_norm_eps = 1e-5f;
  bool tied_embeddings = false;  // no `output.weight`: logits reuse token_embd
  // qwen2: Q/K/V projections carry biases (blk.N.attn_{q,k,v}.bias).
  bool qkv_bias = false;
  // RoPE pairs (i, i + head_dim/2) (qwen2, as llama.cpp's LLAMA_ROPE_TYPE_NEOX) rather than
  // (2i, 2i+1) (llama).
  bool rope_neox = false;
  // Llama-3.1's RoPE scaling: a rope_freqs.weight tensor of head_dim/2 factors divides each
  // pair's frequency.
  bool rope_freq_factors = false;

  // Reads and validates the <architecture>.* keys of `file` (architecture must be one lightserve
  // runs: llama or qwen2; dimensions positive, consistent and below sane limits).
  static Result<LlamaConfig> from_gguf(const GgufFile& file);
};

struct LayerTensors {
  const GgufTensorInfo* attn_norm = nullptr;    // [hidden]            f32
  const GgufTensorInfo* attn_q = nullptr;       // [hidden → heads·hd]
  const GgufTensorInfo* attn_k = nullptr;       // [hidden → kv·hd]
  const GgufTensorInfo* attn_v = nullptr;       // [hidden → kv·hd]
  const GgufTensorInfo* attn_q_bias = nullptr;  // [heads·hd] f32; qkv_bias only
  const GgufTensorInfo* attn_k_bias = nullptr;  // [kv·hd]    f32; qkv_bias only
  const GgufTensorInfo* attn_v_bias = nullptr;  // [kv·hd]    f32; qkv_bias only
  const GgufTensorInfo* attn_output = nullptr;  // [heads·hd → hidden]
  const GgufTensorInfo* ffn_norm = nullptr;     // [hidden]            f32
  const GgufTensorInfo* ffn_gate = nullptr;     // [hidden → ffn]
  const GgufTensorInfo* ffn_up = nullptr;       // [hidden → ffn]
  const GgufTensorInfo* ffn_down = nullptr;     // [ffn → hidden]
};

struct LlamaTensors {
  const GgufTensorInfo* token_embd = nullptr;   // [hidden, vocab] in ggml order
  const GgufTensorInfo* output_norm = nullptr;  // [hidden] f32
  const GgufTensorInfo* output = nullptr;       // [hidden, vocab]; == token_embd when tied
  const GgufTensorInfo* rope_freqs = nullptr;   // [head_dim/2] f32; rope_freq_factors only
  std::vector<LayerTensors> layers;

  // Finds every tensor the config needs and checks its dims (ggml order: dims[0] = input
  // features) and type (norms F32; matrices any supported type). Errors name the tensor.
  static Result<LlamaTensors> bind(const GgufFile& file, const LlamaConfig& config);
};

}  // namespace lightserve::model
