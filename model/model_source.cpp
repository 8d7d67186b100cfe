// Model sources: GGUF files and dummy models at named shapes (model_source.h).
#include "model/model_source.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <utility>

#include "model/hf_folder.h"

namespace lightserve::model {
namespace {

using kernels::DType;

// Shapes of the public models' configs (config.json), Qwen2.5's Q/K/V biases included; the dummy
// weights keep no RoPE scaling, which changes neither bytes nor FLOPs.
const std::array<ModelShape, 5>& presets() {
  static const std::array<ModelShape, 5> table = {{
      // Llama-3.1-8B: its 128K context (Llama-3-8B has the same shapes and 8K).
      {"llama-3-8b", 32, 4096, 14336, 32, 8, 128256, 131072, 500000.0f, 1e-5f, false, "llama"},
      {"llama-2-7b", 32, 4096, 11008, 32, 32, 32000, 4096, 10000.0f, 1e-5f, false, "llama"},
      {"mistral-7b", 32, 4096, 14336, 32, 8, 32000, 32768, 1000000.0f, 1e-5f, false, "llama"},
      {"qwen2.5-7b", 28, 3584, 18944, 28, 4, 152064, 32768, 1000000.0f, 1e-6f, false, "qwen2"},
      {"smollm2-135m", 30, 576, 1536, 9, 3, 49152, 8192, 100000.0f, 1e-5f, true, "llama"},
  }};
  return table;
}

// <unk>, <s>, </s>, <0x00> .. <0xFF>, and SentencePiece's space U+2581 (spaces are escaped to it
// before encoding; without a token of its own it would fall back to its three bytes).
constexpr int32_t kByteVocab = 3 + 256 + 1;

Status check_shape(const ModelShape& s) {
  const auto positive = [](const char* field, int64_t v) -> Status {
    if (v < 1) return Error{std::string("'") + field + "' must be at least 1"};
    return Status::Ok();
  };
  for (const auto& [field, value] : {std::pair<const char*, int64_t>{"layers", s.num_layers},
                                     {"hidden", s.hidden_dim},
                                     {"ffn", s.ffn_dim},
                                     {"heads", s.num_heads},
                                     {"kv_heads", s.num_kv_heads},
                                     {"context", s.context_length}}) {
    if (Status st = positive(field, value); !st) return st;
  }
  if (s.hidden_dim % s.num_heads != 0) {
    return Error{"'hidden' (" + std::to_string(s.hidden_dim) + ") must be a multiple of 'heads' (" +
                 std::to_string(s.num_heads) + ")"};
  }
  if (s.num_heads % s.num_kv_heads != 0) {
    return Error{"'heads' (" + std::to_string(s.num_heads) +
                 ") must be a multiple of 'kv_heads' (" + std::to_string(s.num_kv_heads) + ")"};
  }
  if ((s.hidden_dim / s.num_heads) % 2 != 0) return Error{"the head size must be even (RoPE)"};
  if (s.hidden_dim % 32 != 0 || s.ffn_dim % 32 != 0) {
    return Error{"'hidden' and 'ffn' must be multiples of 32 (quantization blocks)"};
  }
  if (s.vocab_size < kByteVocab) {
    return Error{"'vocab' must be at least " + std::to_string(kByteVocab) +
                 " (the byte vocabulary: <unk>, <s>, </s>, 256 bytes and the space)"};
  }
  if (!(s.rope_freq_base > 0) || !(s.rms_norm_eps > 0)) {
    return Error{"'rope_base' and 'eps' must be positive"};
  }
  return Status::Ok();
}

template <typename T>
bool parse_number(std::string_view text, T& out) {
  if constexpr (std::is_floating_point_v<T>) {
    // std::from_chars for floats is in GCC 11+; strtod keeps the error handling simple.
    const std::string copy(text);
    char* end = nullptr;
    const double v = std::strtod(copy.c_str(), &end);
    if (copy.empty() || end != copy.c_str() + copy.size() || !std::isfinite(v)) return false;
    out = static_cast<T>(v);
    return true;
  } else {
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && ptr == text.data() + text.size();
  }
}

Result<ModelShape> parse_spec(std::string_view text) {
  ModelShape s;
  s.name = std::string(text);
  s.vocab_size = 32000;
  int tied = 0;
  struct Field {
    const char* key;
    int32_t* i = nullptr;
    float* f = nullptr;
    bool seen = false;
    bool required = true;
  };
  std::array<Field, 10> fields = {{{"layers", &s.num_layers},
                                   {"hidden", &s.hidden_dim},
                                   {"heads", &s.num_heads},
                                   {"kv_heads", &s.num_kv_heads},
                                   {"ffn", &s.ffn_dim},
                                   {"vocab", &s.vocab_size, nullptr, false, false},
                                   {"context", &s.context_length},
                                   {"rope_base", nullptr, &s.rope_freq_base, false, false},
                                   {"eps", nullptr, &s.rms_norm_eps, false, false},
                                   {"tied", &tied, nullptr, false, false}}};
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Error{std::string("'").append(item).append("' is not key=value")};
    }
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    Field* field = nullptr;
    for (Field& f : fields) {
      if (key == f.key) field = &f;
    }
    if (field == nullptr) return Error{"unknown field '" + std::string(key) + "'"};
    const bool ok =
        field->i != nullptr ? parse_number(value, *field->i) : parse_number(value, *field->f);
    if (!ok) {
      return Error{
          std::string("'").append(key).append("' is '").append(value).append("', not a number")};
    }
    field->seen = true;
  }
  for (const Field& f : fields) {
    if (f.required && !f.seen) return Error{"missing field '" + std::string(f.key) + "'"};
  }
  if (tied != 0 && tied != 1) return Error{"'tied' must be 0 or 1"};
  s.tied_embeddings = tied == 1;
  return s;
}

// Metadata values.
GgufValue u32(int64_t v) {
  return {GgufValueType::kU32, static_cast<uint64_t>(v)};
}
GgufValue f32(double v) {
  return {GgufValueType::kF32, v};
}
GgufValue boolean(bool v) {
  return {GgufValueType::kBool, v};
}
GgufValue str(std::string v) {
  return {GgufValueType::kString, std::move(v)};
}
GgufValue array(GgufValueType type, std::vector<GgufValue> values) {
  return {GgufValueType::kArray, GgufArray{type, std::move(values)}};
}

std::map<std::string, GgufValue, std::less<>> dummy_metadata(const ModelShape& s) {
  std::map<std::string, GgufValue, std::less<>> m;
  m["general.architecture"] = str(s.architecture);
  m["general.name"] = str("dummy " + s.name);
  const std::string a = s.architecture + ".";
  m[a + "block_count"] = u32(s.num_layers);
  m[a + "context_length"] = u32(s.context_length);
  m[a + "embedding_length"] = u32(s.hidden_dim);
  m[a + "feed_forward_length"] = u32(s.ffn_dim);
  m[a + "attention.head_count"] = u32(s.num_heads);
  m[a + "attention.head_count_kv"] = u32(s.num_kv_heads);
  m[a + "rope.dimension_count"] = u32(s.hidden_dim / s.num_heads);
  m[a + "rope.freq_base"] = f32(s.rope_freq_base);
  m[a + "attention.layer_norm_rms_epsilon"] = f32(s.rms_norm_eps);
  m[a + "vocab_size"] = u32(s.vocab_size);

  std::vector<GgufValue> tokens, types;
  tokens.reserve(static_cast<size_t>(s.vocab_size));
  types.reserve(static_cast<size_t>(s.vocab_size));
  const auto add = [&](std::string text, int32_t type) {
    tokens.emplace_back().type = GgufValueType::kString;
    tokens.back().data.emplace<std::string>(std::move(text));
    types.emplace_back().type = GgufValueType::kI32;
    types.back().data.emplace<int64_t>(type);
  };
  add("<unk>", 2);  // llama.cpp token types: 2 unknown, 3 control, 5 unused, 6 byte
  add("<s>", 3);
  add("</s>", 3);
  for (int byte = 0; byte < 256; ++byte) {
    std::array<char, 8> hex{};
    std::snprintf(hex.data(), hex.size(), "<0x%02X>", byte);
    add(hex.data(), 6);
  }
  add("\xE2\x96\x81", 1);  // normal
  for (int32_t id = kByteVocab; id < s.vocab_size; ++id) {
    add(std::string("<unused").append(std::to_string(id)).append(">"), 5);
  }
  m["tokenizer.ggml.model"] = str("llama");
  m["tokenizer.ggml.tokens"] = array(GgufValueType::kString, std::move(tokens));
  m["tokenizer.ggml.token_type"] = array(GgufValueType::kI32, std::move(types));
  m["tokenizer.ggml.bos_token_id"] = u32(1);
  m["tokenizer.ggml.eos_token_id"] = u32(2);
  m["tokenizer.ggml.unknown_token_id"] = u32(0);
  m["tokenizer.ggml.add_bos_token"] = boolean(true);
  m["tokenizer.ggml.add_space_prefix"] = boolean(false);  // bytes in, the same bytes out
  return m;
}

std::vector<GgufTensorInfo> dummy_tensors(const ModelShape& s, DType matrix_type) {
  const int64_t hidden = s.hidden_dim, head_dim = s.hidden_dim / s.num_heads;
  const int64_t q_dim = s.num_heads * head_dim, kv_dim = s.num_kv_heads * head_dim;
  std::vector<GgufTensorInfo> t;
  const auto add = [&](std::string name, std::vector<int64_t> dims, DType type) {
    GgufTensorInfo info;
    info.name = std::move(name);
    info.dims = std::move(dims);
    info.type = type;
    t.push_back(std::move(info));
  };
  add("token_embd.weight", {hidden, s.vocab_size}, matrix_type);
  add("output_norm.weight", {hidden}, DType::kF32);
  if (!s.tied_embeddings) add("output.weight", {hidden, s.vocab_size}, matrix_type);
  for (int32_t i = 0; i < s.num_layers; ++i) {
    const std::string p = std::string("blk.").append(std::to_string(i)).append(".");
    add(p + "attn_norm.weight", {hidden}, DType::kF32);
    add(p + "attn_q.weight", {hidden, q_dim}, matrix_type);
    add(p + "attn_k.weight", {hidden, kv_dim}, matrix_type);
    add(p + "attn_v.weight", {hidden, kv_dim}, matrix_type);
    if (s.architecture == "qwen2") {
      add(p + "attn_q.bias", {q_dim}, DType::kF32);
      add(p + "attn_k.bias", {kv_dim}, DType::kF32);
      add(p + "attn_v.bias", {kv_dim}, DType::kF32);
    }
    add(p + "attn_output.weight", {q_dim, hidden}, matrix_type);
    add(p + "ffn_norm.weight", {hidden}, DType::kF32);
    add(p + "ffn_gate.weight", {hidden, s.ffn_dim}, matrix_type);
    add(p + "ffn_up.weight", {hidden, s.ffn_dim}, matrix_type);
    add(p + "ffn_down.weight", {s.ffn_dim, hidden}, matrix_type);
  }
  return t;
}

// splitmix64: a seeded stream of random words, one per tensor.
struct Random {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float amplitude) {  // in [-amplitude, amplitude)
    return amplitude * (static_cast<float>(next() >> 40) / static_cast<float>(1 << 23) - 1.0f);
  }
};

// Weights of about ±kAmplitude (norms 1): activations keep their scale through every layer.
constexpr float kAmplitude = 0.02f;

void fill_tensor(const GgufTensorInfo& info, uint8_t* data, uint64_t seed) {
  Random rng{seed ^ std::hash<std::string>{}(info.name)};
  const int64_t n = info.num_elements;
  const auto put16 = [](uint8_t* at, uint16_t v) { std::memcpy(at, &v, 2); };
  if (info.dims.size() == 1) {  // a norm (or a bias): ones
    const float one = 1.0f;
    for (int64_t i = 0; i < n; ++i) std::memcpy(data + 4 * i, &one, 4);
    return;
  }
  switch (info.type) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) {
        const float v = rng.uniform(kAmplitude);
        std::memcpy(data + 4 * i, &v, 4);
      }
      return;
    case DType::kF16:
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const float v = rng.uniform(kAmplitude);
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        put16(data + 2 * i, info.type == DType::kF16 ? kernels::fp32_to_fp16(v)
                                                     : static_cast<uint16_t>(bits >> 16));
      }
      return;
    default:
      break;
  }
  // Quantized: each block a scale and random quants (Q4_1's minimum centres them on 0).
  const int64_t block_bytes = kernels::traits(info.type).block_bytes;
  const int64_t blocks = info.num_bytes / block_bytes;
  const int64_t header = info.type == DType::kQ4_1 ? 4 : 2;
  const float d = info.type == DType::kQ8_0 ? kAmplitude / 127 : kAmplitude / 8;
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* block = data + b * block_bytes;
    put16(block, kernels::fp32_to_fp16(d));
    if (info.type == DType::kQ4_1) put16(block + 2, kernels::fp32_to_fp16(-8 * d));
    for (int64_t at = header; at < block_bytes; at += 8) {
      const uint64_t word = rng.next();
      std::memcpy(block + at, &word, static_cast<size_t>(std::min<int64_t>(8, block_bytes - at)));
    }
  }
}

}  // namespace

Result<LoadFormat> parse_load_format(std::string_view text) {
  if (text == "gguf" || text == "auto") return LoadFormat::kGguf;
  if (text == "dummy") return LoadFormat::kDummy;
  if (text == "safetensors" || text == "hf") return LoadFormat::kHfFolder;
  return Error{"unknown load format '" + std::string(text) +
               "' (auto, gguf, safetensors or dummy)"};
}

std::string_view to_string(LoadFormat format) {
  switch (format) {
    case LoadFormat::kDummy:
      return "dummy";
    case LoadFormat::kHfFolder:
      return "safetensors";
    case LoadFormat::kGguf:
      break;
  }
  return "gguf";
}

std::vector<std::string> shape_presets() {
  std::vector<std::string> names;
  for (const ModelShape& s : presets()) names.push_back(s.name);
  return names;
}

Result<ModelShape> parse_shape(std::string_view text) {
  for (const ModelShape& s : presets()) {
    if (text == s.name) return s;
  }
  if (text.find('=') == std::string_view::npos) {
    std::string names;
    for (const ModelShape& s : presets()) names.append(names.empty() ? "" : ", ").append(s.name);
    return Error{"unknown shape '" + std::string(text) + "' (presets: " + names +
                 "; or a spec such as "
                 "layers=32,hidden=4096,heads=32,kv_heads=8,ffn=14336,vocab=128256,context=8192)"};
  }
  auto shape = parse_spec(text);
  if (!shape) return Error{"shape '" + std::string(text) + "': " + shape.error().message};
  if (Status st = check_shape(shape.value()); !st) {
    return Error{"shape '" + std::string(text) + "': " + st.message()};
  }
  return shape;
}

Result<DType> parse_dummy_type(std::string_view text) {
  for (const auto& [name, type] : {std::pair<std::string_view, DType>{"f32", DType::kF32},
                                   {"f16", DType::kF16},
                                   {"bf16", DType::kBF16},
                                   {"q8_0", DType::kQ8_0},
                                   {"q4_0", DType::kQ4_0},
                                   {"q4_1", DType::kQ4_1}}) {
    if (text == name) return type;
  }
  return Error{"unknown dummy weight type '" + std::string(text) +
               "' (f32, f16, bf16, q8_0, q4_0 or q4_1)"};
}

std::string ModelSource::describe() const {
  if (format != LoadFormat::kDummy) return path;
  return std::string("dummy:")
      .append(shape)
      .append(" (")
      .append(kernels::traits(dummy_type).name)
      .append(")");
}

Result<std::unique_ptr<GgufFile>> open_model_file(const ModelSource& source, bool with_weights) {
  if (source.format == LoadFormat::kHfFolder ||
      (source.format == LoadFormat::kGguf && is_hf_folder(source.path))) {
    return open_hf_folder(source.path, with_weights);
  }
  if (source.format == LoadFormat::kGguf) return GgufFile::open(source.path);
  auto shape = parse_shape(source.shape);
  if (!shape) return shape.error();
  std::string type_name(kernels::traits(source.dummy_type).name);
  for (char& c : type_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (auto type = parse_dummy_type(type_name); !type) return type.error();
  return GgufFile::synthesize(source.describe(), dummy_metadata(shape.value()),
                              dummy_tensors(shape.value(), source.dummy_type),
                              with_weights ? dummy_weight_fill(source) : GgufFile::FillFn());
}

GgufFile::FillFn dummy_weight_fill(const ModelSource& source) {
  const uint64_t seed = source.dummy_seed;
  return [seed](const GgufTensorInfo& info, uint8_t* data) { fill_tensor(info, data, seed); };
}

}  // namespace lightserve::model
