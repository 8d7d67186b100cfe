// Dummy models (model/model_source.h): shapes, the spec grammar and its errors, and that a dummy
// model is a real model: it loads through LlamaModel::load in every dummy weight type, its byte
// vocabulary round-trips any bytes, its forward pass gives finite logits, and its weights depend
// on the seed only.
#include "model/model_source.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

constexpr const char* kTiny = "layers=2,hidden=64,heads=4,kv_heads=2,ffn=128,vocab=300,context=256";

ModelSource dummy(const std::string& shape, kernels::DType type = kernels::DType::kQ4_0,
                  uint64_t seed = 0) {
  ModelSource source;
  source.format = LoadFormat::kDummy;
  source.shape = shape;
  source.dummy_type = type;
  source.dummy_seed = seed;
  return source;
}

std::unique_ptr<kernels::Backend> cpu() {
  std::string why;
  auto backend = kernels::make_backend("cpu", 1, &why);
  EXPECT_NE(backend, nullptr) << why;
  return backend;
}

// Logits of the last prompt token.
std::vector<float> last_logits(LlamaModel& model, const std::vector<int32_t>& prompt) {
  return testing::prompt_logits(model, prompt, /*all_positions=*/false);
}

TEST(ModelSource, PresetsHaveThePublicShapes) {
  auto llama3 = parse_shape("llama-3-8b");
  ASSERT_TRUE(llama3.ok()) << llama3.error().message;
  EXPECT_EQ(llama3->num_layers, 32);
  EXPECT_EQ(llama3->hidden_dim, 4096);
  EXPECT_EQ(llama3->ffn_dim, 14336);
  EXPECT_EQ(llama3->num_kv_heads, 8);
  EXPECT_EQ(llama3->vocab_size, 128256);
  EXPECT_GE(llama3->context_length, 32768);  // room for the 16K-32K benchmarks
  for (const std::string& name : shape_presets()) {
    auto shape = parse_shape(name);
    ASSERT_TRUE(shape.ok()) << name << ": " << shape.error().message;
    // Every preset's metadata reads back as the config it describes (weights not written).
    auto file = open_model_file(dummy(name), /*with_weights=*/false);
    ASSERT_TRUE(file.ok()) << name << ": " << file.error().message;
    auto config = LlamaConfig::from_gguf(*file.value());
    ASSERT_TRUE(config.ok()) << name << ": " << config.error().message;
    EXPECT_EQ(config->num_layers, shape->num_layers) << name;
    EXPECT_EQ(config->hidden_dim, shape->hidden_dim) << name;
    EXPECT_EQ(config->ffn_dim, shape->ffn_dim) << name;
    EXPECT_EQ(config->num_heads, shape->num_heads) << name;
    EXPECT_EQ(config->num_kv_heads, shape->num_kv_heads) << name;
    EXPECT_EQ(config->vocab_size, shape->vocab_size) << name;
    EXPECT_EQ(config->context_length, shape->context_length) << name;
    EXPECT_EQ(config->tied_embeddings, shape->tied_embeddings) << name;
    EXPECT_EQ(config->architecture, shape->architecture) << name;
    EXPECT_EQ(config->qkv_bias, name == "qwen2.5-7b") << name;
    EXPECT_EQ(config->rope_neox, name == "qwen2.5-7b") << name;
    EXPECT_TRUE(LlamaTensors::bind(*file.value(), config.value()).ok()) << name;
  }
}

TEST(ModelSource, SpecsParseAndBadOnesNameTheirField) {
  auto spec = parse_shape(std::string(kTiny) + ",rope_base=500000,eps=1e-6,tied=1");
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  EXPECT_EQ(spec->num_layers, 2);
  EXPECT_EQ(spec->vocab_size, 300);
  EXPECT_FLOAT_EQ(spec->rope_freq_base, 500000.0f);
  EXPECT_FLOAT_EQ(spec->rms_norm_eps, 1e-6f);
  EXPECT_TRUE(spec->tied_embeddings);

  const struct {
    std::string spec;
    std::string message;
  } bad[] = {
      {"llama-9b", "unknown shape 'llama-9b' (presets: llama-3-8b"},
      {"layers=2,hidden=64", "missing field 'heads'"},
      {std::string(kTiny) + ",colour=3", "unknown field 'colour'"},
      {std::string(kTiny) + ",layers=two", "'layers' is 'two', not a number"},
      {"layers=2,hidden=64,heads=4,kv_heads=2,ffn=128,vocab=200,context=256",
       "'vocab' must be at least 260"},
      {"layers=2,hidden=80,heads=4,kv_heads=2,ffn=128,vocab=300,context=256", "multiples of 32"},
      {"layers=2,hidden=64,heads=5,kv_heads=1,ffn=128,vocab=300,context=256",
       "'hidden' (64) must be a multiple of 'heads' (5)"},
      {"layers=2,hidden=64,heads=4,kv_heads=3,ffn=128,vocab=300,context=256",
       "'heads' (4) must be a multiple of 'kv_heads' (3)"},
      {"layers=0,hidden=64,heads=4,kv_heads=2,ffn=128,vocab=300,context=256",
       "'layers' must be at least 1"},
      {std::string(kTiny) + ",tied=2", "'tied' must be 0 or 1"},
      {"layers=2,hidden", "'hidden' is not key=value"},
  };
  for (const auto& c : bad) {
    auto r = parse_shape(c.spec);
    ASSERT_FALSE(r.ok()) << c.spec;
    EXPECT_NE(r.error().message.find(c.message), std::string::npos)
        << c.spec << ": " << r.error().message;
  }
  EXPECT_FALSE(parse_dummy_type("q6_k").ok());
  EXPECT_EQ(parse_dummy_type("bf16").value(), kernels::DType::kBF16);
  EXPECT_EQ(parse_load_format("safetensors").value(), LoadFormat::kHfFolder);
  EXPECT_FALSE(parse_load_format("pytorch").ok());
  EXPECT_EQ(parse_load_format("dummy").value(), LoadFormat::kDummy);
}

TEST(ModelSource, ADummyModelLoadsAndRunsInEveryType) {
  auto backend = cpu();
  for (auto type : {kernels::DType::kF32, kernels::DType::kF16, kernels::DType::kBF16,
                    kernels::DType::kQ8_0, kernels::DType::kQ4_0, kernels::DType::kQ4_1}) {
    const std::string name(kernels::traits(type).name);
    auto model = LlamaModel::load(dummy(kTiny, type), *backend);
    ASSERT_TRUE(model.ok()) << name << ": " << model.error().message;
    const Tokenizer& tok = model.value()->tokenizer();
    EXPECT_EQ(tok.vocab_size(), 300);
    const std::vector<float> logits = last_logits(*model.value(), tok.encode("Hi there", true));
    ASSERT_EQ(logits.size(), 300u) << name;
    float spread = 0;
    for (float v : logits) {
      ASSERT_TRUE(std::isfinite(v)) << name;
      spread = std::max(spread, std::fabs(v - logits[0]));
    }
    EXPECT_GT(spread, 0.0f) << name << ": random weights give distinct logits";
  }
}

TEST(ModelSource, TheByteVocabularyRoundTripsAnyBytes) {
  auto backend = cpu();
  auto model = LlamaModel::load(dummy(kTiny), *backend);
  ASSERT_TRUE(model.ok()) << model.error().message;
  const Tokenizer& tok = model.value()->tokenizer();
  const std::string text = "h\xC3\xA9llo \xF0\x9F\xA6\x99\n\t \x01 end\xFF";
  const std::vector<int32_t> ids = tok.encode(text, /*add_bos=*/true);
  ASSERT_EQ(ids.size(), text.size() + 1);  // BOS, then one token per byte (a space is ▁)
  EXPECT_EQ(ids[0], tok.bos_id());
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_TRUE(tok.is_end_of_generation(tok.eos_id()));
}

TEST(ModelSource, WeightsDependOnTheSeedOnly) {
  auto backend = cpu();
  auto a = LlamaModel::load(dummy(kTiny, kernels::DType::kQ8_0, 1), *backend);
  auto b = LlamaModel::load(dummy(kTiny, kernels::DType::kQ8_0, 1), *backend);
  auto c = LlamaModel::load(dummy(kTiny, kernels::DType::kQ8_0, 2), *backend);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const std::vector<int32_t> prompt = {1, 100, 101, 102};
  const auto la = last_logits(*a.value(), prompt);
  EXPECT_EQ(la, last_logits(*b.value(), prompt));
  EXPECT_NE(la, last_logits(*c.value(), prompt));
}

TEST(ModelSource, AGgufSourceIsTheFileAndErrorsNameIt) {
  auto backend = cpu();
  auto missing = LlamaModel::load(ModelSource("/nonexistent/model.gguf"), *backend);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("/nonexistent/model.gguf"), std::string::npos);
  EXPECT_EQ(dummy("llama-3-8b").describe(), "dummy:llama-3-8b (Q4_0)");
  EXPECT_EQ(ModelSource("m.gguf").describe(), "m.gguf");
}

}  // namespace
}  // namespace lightserve::model
