// LlamaConfig and LlamaTensors tests: the real model's facts, a synthetic tiny LLaMA, and a table
// of broken configurations and tensor sets that must each produce a specific error.
#include "model/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "tests/support/gguf_writer.h"

namespace lightserve::model {
namespace {

using gguf_testing::GgufWriter;
using gguf_testing::TinyLlama;
using kernels::DType;

TEST(LlamaConfigRealModel, MatchesSmolLM2) {
  const std::string path = gguf_testing::test_model_path();
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << "default model not found at " << path
                 << " (set LIGHTSERVE_TEST_MODEL or run scripts/test.sh to fetch it)";
  }
  auto file = GgufFile::open(path);
  ASSERT_TRUE(file.ok()) << file.error().message;
  auto config = LlamaConfig::from_gguf(*file.value());
  ASSERT_TRUE(config.ok()) << config.error().message;
  const LlamaConfig& c = config.value();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_dim, 576);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.ffn_dim, 1536);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.context_length, 8192);
  EXPECT_EQ(c.rope_freq_base, 100000.0f);
  EXPECT_NEAR(c.rms_norm_eps, 1e-5f, 1e-7f);
  EXPECT_TRUE(c.tied_embeddings);

  auto tensors = LlamaTensors::bind(*file.value(), c);
  ASSERT_TRUE(tensors.ok()) << tensors.error().message;
  const LlamaTensors& t = tensors.value();
  ASSERT_EQ(t.layers.size(), 30u);
  EXPECT_EQ(t.output, t.token_embd);
  EXPECT_EQ(t.token_embd->type, DType::kQ8_0);
  EXPECT_EQ(t.layers[29].attn_k->dims, (std::vector<int64_t>{576, 192}));
  EXPECT_EQ(t.layers[0].ffn_down->dims, (std::vector<int64_t>{1536, 576}));
  EXPECT_EQ(t.layers[0].attn_q->type, DType::kQ4_1);
  for (const LayerTensors& layer : t.layers) {
    for (const GgufTensorInfo* info :
         {layer.attn_norm, layer.attn_q, layer.attn_k, layer.attn_v, layer.attn_output,
          layer.ffn_norm, layer.ffn_gate, layer.ffn_up, layer.ffn_down}) {
      ASSERT_NE(info, nullptr);
    }
  }
}

struct Loaded {
  std::vector<uint8_t> bytes;  // must outlive file
  std::unique_ptr<GgufFile> file;
};

Loaded load(const GgufWriter& w) {
  Loaded loaded{w.build(), nullptr};
  auto file = GgufFile::parse(loaded.bytes, "tiny.gguf");
  EXPECT_TRUE(file.ok()) << file.error().message;
  if (file.ok()) loaded.file = std::move(file).value();
  return loaded;
}

TEST(LlamaConfigSynthetic, TinyLlamaBinds) {
  for (bool tied : {true, false}) {
    for (DType type :
         {DType::kQ4_1, DType::kQ4_0, DType::kQ8_0, DType::kF16, DType::kBF16, DType::kF32}) {
      TinyLlama tiny;
      tiny.tied = tied;
      tiny.matrix_type = type;
      Loaded loaded = load(tiny.writer());
      ASSERT_NE(loaded.file, nullptr);
      auto config = LlamaConfig::from_gguf(*loaded.file);
      ASSERT_TRUE(config.ok()) << config.error().message;
      EXPECT_EQ(config->name, "tiny");
      EXPECT_EQ(config->num_layers, 2);
      EXPECT_EQ(config->head_dim, 16);
      EXPECT_EQ(config->num_kv_heads, 2);
      EXPECT_EQ(config->vocab_size, 32);
      EXPECT_EQ(config->tied_embeddings, tied);
      auto tensors = LlamaTensors::bind(*loaded.file, config.value());
      ASSERT_TRUE(tensors.ok()) << tensors.error().message;
      EXPECT_EQ(tensors->output == tensors->token_embd, tied);
      EXPECT_EQ(tensors->layers[1].attn_output->type, type);
    }
  }
}

TEST(LlamaConfigSynthetic, OptionalKeysTakeTheirDefaults) {
  GgufWriter w = TinyLlama{}.writer();
  w.remove_key("llama.attention.head_count_kv")
      .remove_key("llama.rope.freq_base")
      .remove_key("llama.attention.layer_norm_rms_epsilon")
      .remove_key("llama.rope.dimension_count")
      .remove_key("general.name");
  Loaded loaded = load(w);
  ASSERT_NE(loaded.file, nullptr);
  auto config = LlamaConfig::from_gguf(*loaded.file);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->num_kv_heads, config->num_heads);
  EXPECT_EQ(config->rope_freq_base, 10000.0f);
  EXPECT_EQ(config->rms_norm_eps, 1e-5f);
  EXPECT_EQ(config->name, "");

  // llama.vocab_size, when present and consistent, is used.
  GgufWriter with_vocab = TinyLlama{}.writer();
  with_vocab.set_u32("llama.vocab_size", 32);
  Loaded v = load(with_vocab);
  auto c = LlamaConfig::from_gguf(*v.file);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->vocab_size, 32);
}

// The tiny LLaMA as a qwen2 file: qwen2.* keys, Q/K/V biases (F32) unless `biases` is false.
GgufWriter tiny_qwen2(bool biases = true) {
  const TinyLlama tiny;
  GgufWriter w = tiny.writer();
  w.set_string("general.architecture", "qwen2");
  const std::vector<std::pair<std::string, uint32_t>> dims = {
      {"block_count", tiny.num_layers},
      {"context_length", tiny.context},
      {"embedding_length", tiny.hidden},
      {"feed_forward_length", tiny.ffn},
      {"attention.head_count", tiny.num_heads},
      {"attention.head_count_kv", tiny.num_kv_heads},
      {"rope.dimension_count", tiny.hidden / tiny.num_heads}};
  for (const auto& [key, value] : dims) {
    w.remove_key(std::string("llama.").append(key));
    w.set_u32(std::string("qwen2.").append(key), value);
  }
  w.remove_key("llama.rope.freq_base").remove_key("llama.attention.layer_norm_rms_epsilon");
  w.set_f32("qwen2.rope.freq_base", 1000000.0f);
  w.set_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
  if (biases) {
    for (uint32_t i = 0; i < tiny.num_layers; ++i) {
      const std::string p = std::string("blk.").append(std::to_string(i)).append(".");
      w.add_tensor(p + "attn_q.bias", {64}, DType::kF32);
      w.add_tensor(p + "attn_k.bias", {32}, DType::kF32);
      w.add_tensor(p + "attn_v.bias", {32}, DType::kF32);
    }
  }
  return w;
}

TEST(LlamaConfigSynthetic, Qwen2BindsBiasesAndUsesNeoxRope) {
  Loaded loaded = load(tiny_qwen2());
  ASSERT_NE(loaded.file, nullptr);
  auto config = LlamaConfig::from_gguf(*loaded.file);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config->architecture, "qwen2");
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_TRUE(config->rope_neox);
  EXPECT_FALSE(config->rope_freq_factors);
  EXPECT_EQ(config->rope_freq_base, 1000000.0f);
  EXPECT_EQ(config->num_layers, 2);
  auto tensors = LlamaTensors::bind(*loaded.file, config.value());
  ASSERT_TRUE(tensors.ok()) << tensors.error().message;
  EXPECT_EQ(tensors->layers[1].attn_q_bias->name, "blk.1.attn_q.bias");
  EXPECT_EQ(tensors->layers[1].attn_v_bias->dims, (std::vector<int64_t>{32}));

  // Missing biases, biases of the wrong size or type: each named.
  Loaded no_bias = load(tiny_qwen2(false));
  auto c = LlamaConfig::from_gguf(*no_bias.file);
  ASSERT_TRUE(c.ok());
  auto t = LlamaTensors::bind(*no_bias.file, c.value());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("missing tensor blk.0.attn_q.bias"), std::string::npos)
      << t.error().message;
  GgufWriter wrong = tiny_qwen2();
  wrong.find_tensor("blk.1.attn_k.bias")->dims = {64};
  Loaded w = load(wrong);
  t = LlamaTensors::bind(*w.file, LlamaConfig::from_gguf(*w.file).value());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("tensor blk.1.attn_k.bias has shape [64], expected [32]"),
            std::string::npos)
      << t.error().message;

  // Frequency factors are llama's (llama.cpp's qwen2 has none).
  GgufWriter factors = tiny_qwen2();
  factors.add_tensor("rope_freqs.weight", {8}, DType::kF32);
  Loaded f = load(factors);
  auto fc = LlamaConfig::from_gguf(*f.file);
  ASSERT_FALSE(fc.ok());
  EXPECT_NE(fc.error().message.find("only supported for architecture llama, not qwen2"),
            std::string::npos)
      << fc.error().message;
}

TEST(LlamaConfigSynthetic, Llama31FrequencyFactorsBind) {
  GgufWriter w = TinyLlama{}.writer();
  w.add_tensor("rope_freqs.weight", {8}, DType::kF32);
  Loaded loaded = load(w);
  ASSERT_NE(loaded.file, nullptr);
  auto config = LlamaConfig::from_gguf(*loaded.file);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_TRUE(config->rope_freq_factors);
  EXPECT_FALSE(config->rope_neox);
  EXPECT_FALSE(config->qkv_bias);
  auto tensors = LlamaTensors::bind(*loaded.file, config.value());
  ASSERT_TRUE(tensors.ok()) << tensors.error().message;
  ASSERT_NE(tensors->rope_freqs, nullptr);
  EXPECT_EQ(tensors->rope_freqs->dims, (std::vector<int64_t>{8}));
  EXPECT_EQ(tensors->layers[0].attn_q_bias, nullptr);
}

// Each case changes one thing in the tiny LLaMA; the error (from from_gguf or, if that passes,
// from bind) must contain `expected`.
struct BadModel {
  std::string name;
  std::function<void(GgufWriter&)> change;
  std::string expected;
};

std::vector<BadModel> bad_models() {
  return {
      {"gpt2", [](auto& w) { w.set_string("general.architecture", "gpt2"); },
       "architecture 'gpt2' (general.architecture) is not supported; lightserve runs llama "
       "(Llama-2, Llama-3, Llama-3.1, Mistral 7B, SmolLM2) and qwen2 (Qwen2, Qwen2.5)"},
      {"mistral3", [](auto& w) { w.set_string("general.architecture", "mistral3"); },
       "architecture 'mistral3' (general.architecture) is not supported"},
      {"no architecture", [](auto& w) { w.remove_key("general.architecture"); },
       "missing metadata key general.architecture"},
      {"architecture not a string", [](auto& w) { w.set_u32("general.architecture", 1); },
       "general.architecture is u32, expected a string"},
      {"missing block_count", [](auto& w) { w.remove_key("llama.block_count"); },
       "missing metadata key llama.block_count"},
      {"zero layers", [](auto& w) { w.set_u32("llama.block_count", 0); },
       "llama.block_count is 0; must be between 1 and 1024"},
      {"too many layers", [](auto& w) { w.set_u32("llama.block_count", 5000); },
       "llama.block_count is 5000"},
      {"negative hidden", [](auto& w) { w.set_i32("llama.embedding_length", -64); },
       "llama.embedding_length is -64"},
      {"huge ffn", [](auto& w) { w.set_u32("llama.feed_forward_length", 1u << 21); },
       "llama.feed_forward_length is 2097152"},
      {"huge context", [](auto& w) { w.set_u32("llama.context_length", 1u << 25); },
       "llama.context_length is 33554432"},
      {"float head_count", [](auto& w) { w.set_f32("llama.attention.head_count", 4.0f); },
       "llama.attention.head_count is f32, expected an integer"},
      {"head_count not dividing hidden",
       [](auto& w) { w.set_u32("llama.attention.head_count", 5); },
       "llama.embedding_length 64 is not divisible by llama.attention.head_count 5"},
      {"kv heads not dividing heads",
       [](auto& w) { w.set_u32("llama.attention.head_count_kv", 3); },
       "llama.attention.head_count 4 is not divisible by llama.attention.head_count_kv 3"},
      {"odd head dim",
       [](auto& w) {
         w.set_u32("llama.attention.head_count", 64).set_u32("llama.attention.head_count_kv", 64);
       },
       "head dimension 1"},
      {"rope dims mismatch", [](auto& w) { w.set_u32("llama.rope.dimension_count", 8); },
       "llama.rope.dimension_count is 8, but the head dimension is 16"},
      {"rope base negative", [](auto& w) { w.set_f32("llama.rope.freq_base", -1.0f); },
       "llama.rope.freq_base is -1"},
      {"yarn rope scaling", [](auto& w) { w.set_string("llama.rope.scaling.type", "yarn"); },
       "RoPE scaling 'yarn' (llama.rope.scaling.type) is not supported; lightserve supports none "
       "and Llama-3.1's frequency factors (tensor rope_freqs.weight)"},
      {"linear rope scaling", [](auto& w) { w.set_string("llama.rope.scaling.type", "linear"); },
       "RoPE scaling 'linear' (llama.rope.scaling.type) is not supported"},
      {"rope factors of the wrong length",
       [](auto& w) { w.add_tensor("rope_freqs.weight", {16}, kernels::DType::kF32); },
       "tensor rope_freqs.weight has shape [16], expected [8]"},
      {"F16 rope factors",
       [](auto& w) { w.add_tensor("rope_freqs.weight", {8}, kernels::DType::kF16); },
       "tensor rope_freqs.weight has type F16, expected F32"},
      {"Q/K/V biases in a llama file",
       [](auto& w) { w.add_tensor("blk.0.attn_q.bias", {64}, kernels::DType::kF32); },
       "tensor blk.0.attn_q.bias: Q/K/V biases are not part of llama (qwen2 models have them)"},
      {"output bias", [](auto& w) { w.add_tensor("output.bias", {32}, kernels::DType::kF32); },
       "tensor output.bias (a bias term llama models do not have) is not supported"},
      {"eps nan",
       [](auto& w) { w.set_f32("llama.attention.layer_norm_rms_epsilon", std::nanf("")); },
       "llama.attention.layer_norm_rms_epsilon is nan"},
      {"vocab_size disagrees with tokens", [](auto& w) { w.set_u32("llama.vocab_size", 40); },
       "llama.vocab_size is 40 but tokenizer.ggml.tokens has 32 entries"},
      {"no vocabulary", [](auto& w) { w.remove_key("tokenizer.ggml.tokens"); },
       "cannot tell the vocabulary size"},
      {"tokens not an array", [](auto& w) { w.set_string("tokenizer.ggml.tokens", "abc"); },
       "tokenizer.ggml.tokens is string"},
      {"tokens are integers",
       [](auto& w) {
         w.set_i32_array("tokenizer.ggml.tokens", {1, 2});
       },
       "tokenizer.ggml.tokens is array of i32, expected an array of strings"},
      {"token_embd rows disagree with vocab",
       [](auto& w) {
         w.find_tensor("token_embd.weight")->dims = {64, 40};
       },
       "tensor token_embd.weight has shape [64, 40], expected [64, 32]"},
      {"missing tensor", [](auto& w) { w.remove_tensor("blk.1.ffn_up.weight"); },
       "missing tensor blk.1.ffn_up.weight"},
      {"missing output_norm", [](auto& w) { w.remove_tensor("output_norm.weight"); },
       "missing tensor output_norm.weight"},
      {"wrong attn_k shape",
       [](auto& w) {
         w.find_tensor("blk.1.attn_k.weight")->dims = {64, 64};
       },
       "tensor blk.1.attn_k.weight has shape [64, 64], expected [64, 32]"},
      {"transposed ffn_down",
       [](auto& w) {
         w.find_tensor("blk.0.ffn_down.weight")->dims = {64, 128};
       },
       "tensor blk.0.ffn_down.weight has shape [64, 128], expected [128, 64]"},
      {"3-d attn_q",
       [](auto& w) {
         w.find_tensor("blk.0.attn_q.weight")->dims = {64, 64, 1};
       },
       "tensor blk.0.attn_q.weight has shape [64, 64, 1], expected [64, 64]"},
      {"wrong output shape",
       [](auto& w) {
         w.add_tensor("output.weight", {64, 31}, kernels::DType::kQ8_0);
       },
       "tensor output.weight has shape [64, 31], expected [64, 32]"},
      {"F16 norm",
       [](auto& w) {
         w.find_tensor("blk.0.attn_norm.weight")->type_id = static_cast<uint32_t>(DType::kF16);
       },
       "tensor blk.0.attn_norm.weight has type F16, expected F32"},
      {"Q8_0 output_norm",
       [](auto& w) {
         w.find_tensor("output_norm.weight")->type_id = static_cast<uint32_t>(DType::kQ8_0);
       },
       "tensor output_norm.weight has type Q8_0, expected F32"},
  };
}

TEST(LlamaConfigBadModels, EachProducesItsError) {
  for (const BadModel& bad : bad_models()) {
    SCOPED_TRACE(bad.name);
    GgufWriter w = TinyLlama{}.writer();
    bad.change(w);
    const std::vector<uint8_t> bytes = w.build();
    auto file = GgufFile::parse(bytes, "tiny.gguf");
    ASSERT_TRUE(file.ok()) << file.error().message;
    std::string message;
    auto config = LlamaConfig::from_gguf(*file.value());
    if (!config.ok()) {
      message = config.error().message;
    } else {
      auto tensors = LlamaTensors::bind(*file.value(), config.value());
      ASSERT_FALSE(tensors.ok()) << bad.name << " was accepted";
      message = tensors.error().message;
    }
    EXPECT_EQ(message.rfind("tiny.gguf: ", 0), 0u) << message;
    EXPECT_NE(message.find(bad.expected), std::string::npos)
        << "expected \"" << bad.expected << "\" in \"" << message << "\"";
  }
}

}  // namespace
}  // namespace lightserve::model
