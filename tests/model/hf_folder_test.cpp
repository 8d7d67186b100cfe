// Hugging Face folders (model/hf_folder.h, model/safetensors.h, model/hf_tokenizer.h) on tiny
// folders written here: tensors arrive under llama.cpp's names in ggml order with Q/K rows
// permuted per head, norms widened to F32, sharded folders read through their index, the
// tokenizer.json forms (string and pair merges, added tokens, each pre-tokenizer rule, the
// SentencePiece-style scores), and every bad input an error naming its file.
#include "model/hf_folder.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/hf_tokenizer.h"
#include "model/llama_model.h"
#include "model/safetensors.h"

namespace lightserve::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One tensor to write: row-major shape, values stored as `dtype`.
struct Tensor {
  std::vector<int64_t> shape;
  std::string dtype = "F32";
  std::vector<float> values;
};

uint16_t to_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return static_cast<uint16_t>(bits >> 16);  // truncation: the test values are exact in bf16
}

std::string safetensors_bytes(const std::map<std::string, Tensor>& tensors) {
  json header = json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    const size_t begin = data.size();
    for (float v : t.values) {
      if (t.dtype == "F32") {
        data.append(reinterpret_cast<const char*>(&v), 4);
      } else {
        const uint16_t h = t.dtype == "BF16" ? to_bf16(v) : kernels::fp32_to_fp16(v);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  const std::string text = header.dump();
  const uint64_t length = text.size();
  return std::string(reinterpret_cast<const char*>(&length), 8) + text + data;
}

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A byte-level BPE tokenizer.json: the 256 GPT-2 alphabet symbols, merges "Ġ t" and "Ġt h" etc.
json byte_level_tokenizer() {
  json vocab = json::object();
  int id = 0, extra = 0x100;
  for (int byte = 0; byte < 256; ++byte) {
    const bool printable =
        (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
    const int cp = printable ? byte : extra++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    vocab[s] = id++;
  }
  vocab["\xC4\xA0t"] = id++;  // "Ġt"
  vocab["he"] = id++;
  vocab["\xC4\xA0the"] = id++;
  json tokenizer = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", id}, {"content", "<|endoftext|>"}, {"special", true}},
        {{"id", id + 1}, {"content", "<think>"}, {"special", false}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Digits"}, {"individual_digits", true}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", {"\xC4\xA0 t", "h e", "\xC4\xA0t he"}},
        {"byte_fallback", false}}}};
  return tokenizer;
}

constexpr int64_t kHidden = 8, kHeads = 2, kKvHeads = 1, kFfn = 16, kLayers = 1;
constexpr int64_t kVocab = 264;  // 256 bytes + 3 merges + 2 added + 3 padding rows

json llama_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", kHidden},
          {"intermediate_size", kFfn},
          {"num_hidden_layers", kLayers},
          {"num_attention_heads", kHeads},
          {"num_key_value_heads", kKvHeads},
          {"vocab_size", kVocab},
          {"max_position_embeddings", 128},
          {"rope_theta", 10000.0},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", false},
          {"bos_token_id", 259},
          {"eos_token_id", 259}};
}

// Tensor values that tell rows apart: value = row * 100 + column (small ints, exact in bf16).
Tensor numbered(std::vector<int64_t> shape, const std::string& dtype) {
  Tensor t{shape, dtype, {}};
  const int64_t rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t.values.push_back(static_cast<float>((r % 64) * 4 + c % 4));
  }
  return t;
}

std::map<std::string, Tensor> llama_tensors(const std::string& dtype) {
  const int64_t kv = kKvHeads * (kHidden / kHeads);
  std::map<std::string, Tensor> t;
  t["model.embed_tokens.weight"] = numbered({kVocab, kHidden}, dtype);
  t["model.norm.weight"] = numbered({kHidden}, dtype);
  t["lm_head.weight"] = numbered({kVocab, kHidden}, dtype);
  const std::string p = "model.layers.0.";
  t[p + "input_layernorm.weight"] = numbered({kHidden}, dtype);
  t[p + "post_attention_layernorm.weight"] = numbered({kHidden}, dtype);
  t[p + "self_attn.q_proj.weight"] = numbered({kHidden, kHidden}, dtype);
  t[p + "self_attn.k_proj.weight"] = numbered({kv, kHidden}, dtype);
  t[p + "self_attn.v_proj.weight"] = numbered({kv, kHidden}, dtype);
  t[p + "self_attn.o_proj.weight"] = numbered({kHidden, kHidden}, dtype);
  t[p + "mlp.gate_proj.weight"] = numbered({kFfn, kHidden}, dtype);
  t[p + "mlp.up_proj.weight"] = numbered({kFfn, kHidden}, dtype);
  t[p + "mlp.down_proj.weight"] = numbered({kHidden, kFfn}, dtype);
  return t;
}

class HfFolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lightserve_hf_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a complete folder; tests then break one part of it.
  void write_folder(const std::string& dtype = "F32", const json& config = llama_config(),
                    const json& tokenizer = byte_level_tokenizer()) {
    write(dir_ / "config.json", config.dump());
    write(dir_ / "tokenizer.json", tokenizer.dump());
    write(dir_ / "tokenizer_config.json",
          json({{"chat_template", "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}"},
                {"eos_token", "<|endoftext|>"}})
              .dump());
    write(dir_ / "model.safetensors", safetensors_bytes(llama_tensors(dtype)));
  }
  std::string open_error() {
    auto file = open_hf_folder(dir_.string());
    return file ? std::string("(opened)") : file.error().message;
  }

  fs::path dir_;
};

float value_at(const GgufFile& file, const GgufTensorInfo& info, int64_t index) {
  const uint8_t* data = file.tensor_data(info);
  if (info.type == kernels::DType::kF32) {
    float v;
    std::memcpy(&v, data + 4 * index, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, data + 2 * index, 2);
  return info.type == kernels::DType::kBF16 ? kernels::bf16_to_fp32(h) : kernels::fp16_to_fp32(h);
}

TEST_F(HfFolderTest, TensorsArriveInGgufOrderWithQAndKPermuted) {
  for (const std::string dtype : {"F32", "BF16", "F16"}) {
    write_folder(dtype);
    auto opened = open_hf_folder(dir_.string());
    ASSERT_TRUE(opened.ok()) << dtype << ": " << opened.error().message;
    const GgufFile& file = *opened.value();
    const auto* q = file.tensor("blk.0.attn_q.weight");
    const auto* k = file.tensor("blk.0.attn_k.weight");
    const auto* v = file.tensor("blk.0.attn_v.weight");
    const auto* norm = file.tensor("blk.0.attn_norm.weight");
    ASSERT_TRUE(q && k && v && norm && file.tensor("output.weight"));
    EXPECT_EQ(q->dims, (std::vector<int64_t>{kHidden, kHidden}));
    EXPECT_EQ(k->dims, (std::vector<int64_t>{kHidden, 4}));
    EXPECT_EQ(file.tensor("blk.0.ffn_down.weight")->dims, (std::vector<int64_t>{kFfn, kHidden}));
    EXPECT_EQ(norm->type, kernels::DType::kF32) << dtype;
    EXPECT_EQ(q->type, dtype == "F32"    ? kernels::DType::kF32
                       : dtype == "BF16" ? kernels::DType::kBF16
                                         : kernels::DType::kF16);
    // head_dim 4: GGUF rows 0,1,2,3 of a head are HF rows 0,2,1,3.
    const int64_t from[4] = {0, 2, 1, 3};
    for (int64_t head = 0; head < kHeads; ++head) {
      for (int64_t r = 0; r < 4; ++r) {
        const int64_t hf_row = head * 4 + from[r];
        EXPECT_EQ(value_at(file, *q, (head * 4 + r) * kHidden + 1), hf_row * 4 + 1) << dtype;
      }
    }
    for (int64_t r = 0; r < 4; ++r) {
      EXPECT_EQ(value_at(file, *k, r * kHidden), from[r] * 4);
      EXPECT_EQ(value_at(file, *v, r * kHidden), r * 4);  // V is not permuted
    }
    EXPECT_EQ(value_at(file, *norm, 5), 20.0f);
  }
}

TEST_F(HfFolderTest, MetadataAndTokenizerComeFromTheJsonFiles) {
  write_folder();
  auto opened = open_hf_folder(dir_.string());
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  const GgufFile& file = *opened.value();
  auto config = LlamaConfig::from_gguf(file);
  ASSERT_TRUE(config.ok()) << config.error().message;
  EXPECT_EQ(config.value().num_layers, kLayers);
  EXPECT_EQ(config.value().num_kv_heads, kKvHeads);
  EXPECT_EQ(config.value().vocab_size, kVocab);
  EXPECT_FALSE(config.value().tied_embeddings);
  EXPECT_EQ(file.get_string("tokenizer.ggml.pre").value().value_or(""), "smollm");
  EXPECT_NE(file.get_string("tokenizer.chat_template").value().value_or("").find("im_start"),
            std::string::npos);

  auto tokenizer = Tokenizer::from_gguf(file);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message;
  const Tokenizer& t = *tokenizer.value();
  EXPECT_EQ(t.vocab_size(), kVocab);
  EXPECT_EQ(t.eos_id(), 259);  // tokenizer_config.json's eos_token
  EXPECT_TRUE(t.is_control(259));
  EXPECT_FALSE(t.is_control(260));  // <think>: added, not special → user-defined
  EXPECT_EQ(t.token_text(262), "[PAD262]");
  EXPECT_EQ(t.encode(" the<|endoftext|>"), (std::vector<int32_t>{258, 259}));
  EXPECT_EQ(t.encode("12"), (std::vector<int32_t>{'1', '2'}));
  EXPECT_EQ(t.decode(t.encode("Hello, the world <think>")), "Hello, the world <think>");
}

TEST_F(HfFolderTest, LoadsAndRunsThroughLlamaModel) {
  write_folder("BF16");
  std::string why;
  auto backend = kernels::make_backend("cpu", 1, &why);
  ASSERT_NE(backend, nullptr) << why;
  auto model = LlamaModel::load(ModelSource(dir_.string()), *backend);
  ASSERT_TRUE(model.ok()) << model.error().message;
  SequenceCache cache(model.value()->config(), 16);
  const std::vector<int32_t> prompt = {1, 2, 3};
  BatchEntry entry;
  entry.cache = &cache;
  entry.tokens = prompt;
  std::vector<float> logits;
  ASSERT_TRUE(model.value()->forward({&entry, 1}, logits).ok());
  EXPECT_EQ(logits.size(), static_cast<size_t>(kVocab));
}

TEST_F(HfFolderTest, TiedEmbeddingsDropTheHeadAndShardsReadThroughTheIndex) {
  json config = llama_config();
  config["tie_word_embeddings"] = true;
  write_folder("F32", config);
  fs::remove(dir_ / "model.safetensors");
  auto tensors = llama_tensors("F32");
  std::map<std::string, Tensor> first, second;
  json map = json::object();
  for (auto& [name, t] : tensors) {
    const bool one = name.find("layers") == std::string::npos;
    (one ? first : second)[name] = t;
    map[name] = one ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write(dir_ / "model-00001-of-00002.safetensors", safetensors_bytes(first));
  write(dir_ / "model-00002-of-00002.safetensors", safetensors_bytes(second));
  write(dir_ / "model.safetensors.index.json", json({{"weight_map", map}}).dump());
  auto opened = open_hf_folder(dir_.string());
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened.value()->tensor("output.weight"), nullptr);
  EXPECT_NE(opened.value()->tensor("blk.0.ffn_up.weight"), nullptr);
}

TEST_F(HfFolderTest, BadFoldersAreErrorsNamingTheFile) {
  const auto expect_error = [&](const std::string& what, const std::string& needle) {
    const std::string message = open_error();
    EXPECT_NE(message.find(needle), std::string::npos) << what << ": " << message;
  };
  write_folder();
  fs::remove(dir_ / "config.json");
  expect_error("no config", "no config.json");
  write_folder();
  fs::remove(dir_ / "tokenizer.json");
  expect_error("no tokenizer", "no tokenizer.json");
  write_folder();
  fs::remove(dir_ / "model.safetensors");
  expect_error("no weights", "no *.safetensors");

  json config = llama_config();
  config["architectures"] = {"GPTNeoXForCausalLM"};
  write_folder("F32", config);
  expect_error("architecture", "config.json: architecture 'GPTNeoXForCausalLM' is not supported");
  config = llama_config();
  config["attention_bias"] = true;
  write_folder("F32", config);
  expect_error("bias", "attention_bias");
  config = llama_config();
  config["intermediate_size"] = 32;
  write_folder("F32", config);
  expect_error("shape",
               "model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape [16, 8], "
               "config.json implies [32, 8]");

  write_folder();
  const std::string bytes = safetensors_bytes(llama_tensors("F32"));
  write(dir_ / "model.safetensors", bytes.substr(0, 40));
  expect_error("truncated header", "model.safetensors: truncated");
  write(dir_ / "model.safetensors", bytes.substr(0, bytes.size() - 4));
  expect_error("truncated data", "model.safetensors: tensor");
  write(dir_ / "model.safetensors", std::string(8, '\xff'));
  expect_error("huge header", "model.safetensors: header length");

  auto tensors = llama_tensors("F32");
  tensors["model.layers.0.self_attn.q_proj.bias"] = Tensor{{kHidden}, "F32", std::vector<float>(8)};
  write(dir_ / "model.safetensors", safetensors_bytes(tensors));
  expect_error("extra tensor", "unexpected tensor model.layers.0.self_attn.q_proj.bias");

  // An unsupported dtype: rewrite one tensor's dtype name in the header (same byte count).
  std::string i16 = safetensors_bytes(llama_tensors("BF16"));
  const size_t at = i16.find("\"BF16\"");
  i16.replace(at, 6, "\"I16\" ");
  write(dir_ / "model.safetensors", i16);
  expect_error("dtype", "has dtype I16; only BF16, F16 and F32");

  json tokenizer = byte_level_tokenizer();
  tokenizer["model"]["type"] = "WordPiece";
  write_folder("F32", llama_config(), tokenizer);
  expect_error("wordpiece", "tokenizer.json: tokenizer model type 'WordPiece' is not supported");
  tokenizer = byte_level_tokenizer();
  tokenizer["pre_tokenizer"] = {{"type", "Whitespace"}};
  write_folder("F32", llama_config(), tokenizer);
  expect_error("pre-tokenizer", "tokenizer.json: byte-level BPE needs a ByteLevel pre-tokenizer");
}

// Llama-3.1's rope_scaling becomes rope_freqs.weight, computed as convert_hf_to_gguf.py does
// (values from its formula in torch f32: head_dim 4, θ 10000, original context 2048: the pair of
// wavelength 2π is high-frequency (1), the one of 200π is between the two (smoothed)).
TEST_F(HfFolderTest, Llama3RopeScalingBecomesFrequencyFactors) {
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    json config = llama_config();
    config[key] = {{"rope_type", "llama3"},
                   {"factor", 8.0},
                   {"low_freq_factor", 1.0},
                   {"high_freq_factor", 4.0},
                   {"original_max_position_embeddings", 2048}};
    write_folder("F32", config);
    auto opened = open_hf_folder(dir_.string());
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    const GgufTensorInfo* freqs = opened.value()->tensor("rope_freqs.weight");
    ASSERT_NE(freqs, nullptr) << key;
    EXPECT_EQ(freqs->dims, (std::vector<int64_t>{2}));
    EXPECT_EQ(freqs->type, kernels::DType::kF32);
    EXPECT_EQ(value_at(*opened.value(), *freqs, 0), 1.0f);
    EXPECT_NEAR(value_at(*opened.value(), *freqs, 1), 1.2754795551300049f, 1e-6f);
    auto parsed = LlamaConfig::from_gguf(*opened.value());
    ASSERT_TRUE(parsed.ok()) << parsed.error().message;
    EXPECT_TRUE(parsed->rope_freq_factors);
    EXPECT_EQ(opened.value()->find("llama.rope.scaling.type"), nullptr);
  }
  json config = llama_config();
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}};
  write_folder("F32", config);
  EXPECT_NE(open_error().find("rope_scaling.high_freq_factor must exceed low_freq_factor"),
            std::string::npos)
      << open_error();
}

TEST_F(HfFolderTest, OtherRopeScalingIsRefusedByTheModelConfig) {
  for (const char* type : {"yarn", "linear"}) {
    json config = llama_config();
    config["rope_scaling"] = {{"rope_type", type}, {"factor", 4.0}};
    write_folder("F32", config);
    auto opened = open_hf_folder(dir_.string());
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    auto parsed = LlamaConfig::from_gguf(*opened.value());
    ASSERT_FALSE(parsed.ok());
    EXPECT_NE(parsed.error().message.find(std::string("RoPE scaling '") + type + "'"),
              std::string::npos)
        << parsed.error().message;
  }
}

// Qwen2ForCausalLM: architecture qwen2, Q/K/V biases, Q and K rows kept in Hugging Face's order
// (NEOX RoPE), a sliding_window that is not used does not cut the context.
TEST_F(HfFolderTest, Qwen2KeepsQAndKOrderAndMapsBiases) {
  json config = llama_config();
  config["architectures"] = {"Qwen2ForCausalLM"};
  config["model_type"] = "qwen2";
  config["sliding_window"] = 64;
  config["use_sliding_window"] = false;
  write(dir_ / "config.json", config.dump());
  write(dir_ / "tokenizer.json", byte_level_tokenizer().dump());
  auto tensors = llama_tensors("BF16");
  const int64_t kv = kKvHeads * (kHidden / kHeads);
  tensors["model.layers.0.self_attn.q_proj.bias"] = numbered({kHidden}, "BF16");
  tensors["model.layers.0.self_attn.k_proj.bias"] = numbered({kv}, "BF16");
  tensors["model.layers.0.self_attn.v_proj.bias"] = numbered({kv}, "BF16");
  write(dir_ / "model.safetensors", safetensors_bytes(tensors));
  auto opened = open_hf_folder(dir_.string());
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  const GgufFile& file = *opened.value();
  auto parsed = LlamaConfig::from_gguf(file);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->architecture, "qwen2");
  EXPECT_TRUE(parsed->qkv_bias);
  EXPECT_TRUE(parsed->rope_neox);
  EXPECT_EQ(parsed->context_length, 128);
  const auto* q = file.tensor("blk.0.attn_q.weight");
  const auto* k = file.tensor("blk.0.attn_k.weight");
  const auto* kb = file.tensor("blk.0.attn_k.bias");
  ASSERT_TRUE(q && k && kb);
  EXPECT_EQ(kb->type, kernels::DType::kF32);  // widened, as norms
  EXPECT_EQ(kb->dims, (std::vector<int64_t>{kv}));
  for (int64_t r = 0; r < kHidden; ++r) {
    EXPECT_EQ(value_at(file, *q, r * kHidden + 1), r * 4 + 1);  // not permuted
  }
  for (int64_t r = 0; r < kv; ++r) {
    EXPECT_EQ(value_at(file, *k, r * kHidden), r * 4);
    EXPECT_EQ(value_at(file, *kb, r), r * 4);
  }
  auto tensors_bound = LlamaTensors::bind(file, parsed.value());
  ASSERT_TRUE(tensors_bound.ok()) << tensors_bound.error().message;

  // Without its biases, the folder names the missing one.
  tensors.erase("model.layers.0.self_attn.v_proj.bias");
  write(dir_ / "model.safetensors", safetensors_bytes(tensors));
  EXPECT_NE(open_error().find("no tensor model.layers.0.self_attn.v_proj.bias"), std::string::npos)
      << open_error();
}

TEST(HfTokenizer, PreTokenizerRulesAndMergeForms) {
  json tokenizer = byte_level_tokenizer();
  const auto pre_of = [](const json& t) {
    HfTokenizerSources sources;
    const std::string text = t.dump();
    sources.tokenizer_json = text;
    auto read = read_hf_tokenizer(sources);
    return read ? read.value().spec.pre : "error: " + read.error().message;
  };
  EXPECT_EQ(pre_of(tokenizer), "smollm");
  tokenizer["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
  EXPECT_EQ(pre_of(tokenizer), "gpt2");
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  std::string qwen2 = llama3;
  qwen2.replace(qwen2.find("{1,3}"), 5, "");
  for (const auto& [regex, ignore_merges, expected] :
       {std::tuple<std::string, bool, std::string>{llama3, true, "llama-bpe"},
        {llama3, false, "dbrx"},
        {qwen2, false, "qwen2"},
        {"\\s+", false, "error"}}) {
    tokenizer["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}},
          {{"type", "ByteLevel"}, {"use_regex", false}}}}};
    tokenizer["model"]["ignore_merges"] = ignore_merges;
    EXPECT_EQ(pre_of(tokenizer).substr(0, expected.size()), expected) << regex;
  }

  // Pair merges read as the string form.
  json pairs = byte_level_tokenizer();
  pairs["model"]["merges"] = json::array(
      {json::array({"\xC4\xA0", "t"}), json::array({"h", "e"}), json::array({"\xC4\xA0t", "he"})});
  HfTokenizerSources a, b;
  const std::string text_a = byte_level_tokenizer().dump(), text_b = pairs.dump();
  a.tokenizer_json = text_a;
  b.tokenizer_json = text_b;
  auto read_a = read_hf_tokenizer(a), read_b = read_hf_tokenizer(b);
  ASSERT_TRUE(read_a.ok()) << read_a.error().message;
  ASSERT_TRUE(read_b.ok()) << read_b.error().message;
  EXPECT_EQ(read_a.value().spec.merges, read_b.value().spec.merges);
}

TEST(HfTokenizer, SentencePieceStyleGetsScoresFromMergeRanks) {
  json vocab = {{"<unk>", 0},
                {"<s>", 1},
                {"</s>", 2},
                {"<0x0A>", 3},
                {"\xE2\x96\x81", 4},
                {"a", 5},
                {"b", 6},
                {"ab", 7},
                {"\xE2\x96\x81"
                 "ab",
                 8}};
  json tokenizer = {
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
      {"pre_tokenizer", nullptr},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", {"a b", "\xE2\x96\x81 ab"}},
        {"byte_fallback", true},
        {"unk_token", "<unk>"}}}};
  const std::string text = tokenizer.dump();
  const std::string config = json({{"add_bos_token", true}, {"bos_token", "<s>"}}).dump();
  HfTokenizerSources sources;
  sources.tokenizer_json = text;
  sources.tokenizer_config = config;
  auto read = read_hf_tokenizer(sources);
  ASSERT_TRUE(read.ok()) << read.error().message;
  const TokenizerSpec& spec = read.value().spec;
  EXPECT_EQ(spec.model, "llama");
  EXPECT_TRUE(spec.add_space_prefix);
  EXPECT_TRUE(spec.add_bos);
  EXPECT_EQ(spec.unk_id, 0);
  EXPECT_EQ(spec.bos_id, 1);
  EXPECT_EQ(spec.token_types[3], 6);  // byte
  EXPECT_EQ(spec.scores[7], 0.0f);
  EXPECT_EQ(spec.scores[8], -1.0f);
  auto built = Tokenizer::from_spec(spec);
  ASSERT_TRUE(built.ok()) << built.error().message;
  EXPECT_EQ(built.value()->encode("ab\n", true), (std::vector<int32_t>{1, 8, 3}));
}

TEST(Safetensors, HeaderChecks) {
  const std::string bytes = safetensors_bytes({{"x", Tensor{{2, 2}, "F32", {1, 2, 3, 4}}}});
  auto file = SafetensorsFile::parse({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
                                     "x.safetensors");
  ASSERT_TRUE(file.ok()) << file.error().message;
  ASSERT_EQ(file.value()->tensors().size(), 1u);
  EXPECT_EQ(file.value()->tensors()[0].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(file.value()->tensors()[0].data.size(), 16u);
  const std::string empty = std::string("\x02\0\0\0\0\0\0\0{}", 10) + "zz";
  EXPECT_TRUE(SafetensorsFile::parse({reinterpret_cast<const uint8_t*>(empty.data()), empty.size()})
                  .ok());  // no tensors
  for (const std::string& bad :
       {bytes.substr(0, 5), bytes.substr(0, 12), std::string("\x02\0\0\0\0\0\0\0[]", 10)}) {
    auto parsed = SafetensorsFile::parse({reinterpret_cast<const uint8_t*>(bad.data()), bad.size()},
                                         "bad.safetensors");
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.error().message.rfind("bad.safetensors: ", 0), 0u) << parsed.error().message;
  }
}

}  // namespace
}  // namespace lightserve::model
