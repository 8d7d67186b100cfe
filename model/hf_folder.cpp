// Hugging Face folders as GgufFiles (hf_folder.h).
#include "model/hf_folder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "model/hf_tokenizer.h"
#include "model/safetensors.h"

namespace lightserve::model {
namespace {

namespace fs = std::filesystem;
using kernels::DType;
using nlohmann::json;
using Metadata = std::map<std::string, GgufValue, std::less<>>;

constexpr const char* kNeeds =
    " (a Hugging Face model folder holds config.json, tokenizer.json and *.safetensors)";

// Reads a whole file; nullopt when it does not exist.
Result<std::optional<std::string>> read_text(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::optional<std::string>();
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{"cannot read " + path.string()};
  std::ostringstream text;
  text << in.rdbuf();
  return std::optional<std::string>(text.str());
}

// Metadata values, built in place (GCC 12 warns falsely on variant temporaries).
void put_u32(Metadata& m, const std::string& key, int64_t v) {
  GgufValue& value = m[key];
  value.type = GgufValueType::kU32;
  value.data.emplace<uint64_t>(static_cast<uint64_t>(v));
}
void put_f32(Metadata& m, const std::string& key, double v) {
  GgufValue& value = m[key];
  value.type = GgufValueType::kF32;
  value.data.emplace<double>(v);
}
void put_bool(Metadata& m, const std::string& key, bool v) {
  GgufValue& value = m[key];
  value.type = GgufValueType::kBool;
  value.data.emplace<bool>(v);
}
void put_string(Metadata& m, const std::string& key, std::string v) {
  GgufValue& value = m[key];
  value.type = GgufValueType::kString;
  value.data.emplace<std::string>(std::move(v));
}
GgufArray& put_array(Metadata& m, const std::string& key, GgufValueType element_type) {
  GgufValue& value = m[key];
  value.type = GgufValueType::kArray;
  GgufArray& array = value.data.emplace<GgufArray>();
  array.element_type = element_type;
  return array;
}

void add_tokenizer_metadata(Metadata& m, const HfTokenizer& hf) {
  const TokenizerSpec& spec = hf.spec;
  put_string(m, "tokenizer.ggml.model", spec.model);
  put_string(m, "tokenizer.ggml.pre", spec.pre);
  GgufArray& tokens = put_array(m, "tokenizer.ggml.tokens", GgufValueType::kString);
  tokens.values.resize(spec.tokens.size());
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    tokens.values[i].type = GgufValueType::kString;
    tokens.values[i].data.emplace<std::string>(spec.tokens[i]);
  }
  GgufArray& types = put_array(m, "tokenizer.ggml.token_type", GgufValueType::kI32);
  types.values.resize(spec.token_types.size());
  for (size_t i = 0; i < spec.token_types.size(); ++i) {
    types.values[i].type = GgufValueType::kI32;
    types.values[i].data.emplace<int64_t>(spec.token_types[i]);
  }
  if (spec.model == "gpt2") {
    GgufArray& merges = put_array(m, "tokenizer.ggml.merges", GgufValueType::kString);
    merges.values.resize(spec.merges.size());
    for (size_t i = 0; i < spec.merges.size(); ++i) {
      merges.values[i].type = GgufValueType::kString;
      merges.values[i].data.emplace<std::string>(spec.merges[i]);
    }
  } else {
    GgufArray& scores = put_array(m, "tokenizer.ggml.scores", GgufValueType::kF32);
    scores.values.resize(spec.scores.size());
    for (size_t i = 0; i < spec.scores.size(); ++i) {
      scores.values[i].type = GgufValueType::kF32;
      scores.values[i].data.emplace<double>(spec.scores[i]);
    }
  }
  for (const auto& [key, id] : {std::pair<const char*, int32_t>{"bos_token_id", spec.bos_id},
                                {"eos_token_id", spec.eos_id},
                                {"unknown_token_id", spec.unk_id},
                                {"padding_token_id", spec.pad_id}}) {
    if (id >= 0) put_u32(m, std::string("tokenizer.ggml.").append(key), id);
  }
  put_bool(m, "tokenizer.ggml.add_bos_token", spec.add_bos);
  put_bool(m, "tokenizer.ggml.add_space_prefix", spec.add_space_prefix);
  if (!hf.chat_template.empty()) put_string(m, "tokenizer.chat_template", hf.chat_template);
}

// config.json, read and checked.
struct HfConfig {
  std::string architecture;  // the GGUF one: "llama" or "qwen2"
  int64_t num_layers = 0, hidden = 0, ffn = 0, heads = 0, kv_heads = 0, vocab = 0, context = 0;
  double rope_theta = 10000.0, rms_norm_eps = 1e-6;
  bool tied = false;
  std::string rope_scaling;  // "" when none (or llama3, which rope_factors carries)
  // Llama-3.1's rope_scaling {rope_type: llama3, ...}: its rope_freqs.weight, computed.
  std::vector<float> rope_factors;
};

// The frequency factors of rope_scaling {rope_type: llama3}, as convert_hf_to_gguf.py's
// LlamaModel computes them (in f32, as its torch code does): 1 for short wavelengths, `factor`
// for long ones, and a smooth blend between.
Result<std::vector<float>> llama3_rope_factors(const std::string& file, const std::string& key,
                                               const json& scaling, double rope_theta,
                                               int64_t head_dim) {
  const auto get = [&](const char* name, double fallback) -> Result<double> {
    const auto it = scaling.find(name);
    if (it == scaling.end() || it->is_null()) return fallback;
    if (!it->is_number() || !(it->get<double>() > 0)) {
      return Error{file + ": " + key + "." + name + " must be a positive number"};
    }
    return it->get<double>();
  };
  auto factor = get("factor", 8.0);
  if (!factor) return factor.error();
  auto low = get("low_freq_factor", 1.0);
  if (!low) return low.error();
  auto high = get("high_freq_factor", 4.0);
  if (!high) return high.error();
  auto old_context = get("original_max_position_embeddings", 8192.0);
  if (!old_context) return old_context.error();
  if (!(high.value() > low.value())) {
    return Error{file + ": " + key + ".high_freq_factor must exceed low_freq_factor"};
  }
  const auto f = static_cast<float>(factor.value()), lo = static_cast<float>(low.value()),
             hi = static_cast<float>(high.value()), old = static_cast<float>(old_context.value());
  const float low_wavelen = old / lo, high_wavelen = old / hi;
  const auto base = static_cast<float>(rope_theta);
  std::vector<float> factors;
  for (int64_t i = 0; i < head_dim; i += 2) {
    const float freq = 1.0f / std::pow(base, static_cast<float>(i) / static_cast<float>(head_dim));
    const float wavelen = 2.0f * static_cast<float>(M_PI) / freq;
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(f);
    } else {
      const float smooth = (old / wavelen - lo) / (hi - lo);
      factors.push_back(1.0f / ((1.0f - smooth) / f + smooth));
    }
  }
  return factors;
}

Result<HfConfig> read_config(const std::string& file, const json& config) {
  const auto fail = [&](const std::string& why) { return Error{file + ": " + why}; };
  if (!config.is_object()) return fail("not a JSON object");
  std::string architecture;
  if (const auto it = config.find("architectures");
      it != config.end() && it->is_array() && !it->empty() && (*it)[0].is_string()) {
    architecture = (*it)[0].get<std::string>();
  }
  if (architecture != "LlamaForCausalLM" && architecture != "MistralForCausalLM" &&
      architecture != "Qwen2ForCausalLM") {
    return fail("architecture '" + architecture +
                "' is not supported (LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM "
                "are)");
  }
  HfConfig c;
  c.architecture = architecture == "Qwen2ForCausalLM" ? "qwen2" : "llama";
  const bool qwen2 = c.architecture == "qwen2";
  const auto integer = [&](const char* key, int64_t& out, bool required) -> Status {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) {
      if (required) return fail(std::string("missing ").append(key));
      return Status::Ok();
    }
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > (1 << 24)) {
      return fail(std::string(key).append(" must be a positive integer"));
    }
    out = it->get<int64_t>();
    return Status::Ok();
  };
  const auto number = [&](const char* key, double& out) -> Status {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return Status::Ok();
    if (!it->is_number() || !(it->get<double>() > 0)) {
      return fail(std::string(key).append(" must be a positive number"));
    }
    out = it->get<double>();
    return Status::Ok();
  };
  c.context = 2048;  // transformers' LlamaConfig default
  for (const auto& [key, out, required] :
       {std::tuple<const char*, int64_t*, bool>{"num_hidden_layers", &c.num_layers, true},
        {"hidden_size", &c.hidden, true},
        {"intermediate_size", &c.ffn, true},
        {"num_attention_heads", &c.heads, true},
        {"num_key_value_heads", &c.kv_heads, false},
        {"vocab_size", &c.vocab, true},
        {"max_position_embeddings", &c.context, false}}) {
    if (Status st = integer(key, *out, required); !st) return Error{st.message()};
  }
  if (c.kv_heads == 0) c.kv_heads = c.heads;
  if (Status st = number("rope_theta", c.rope_theta); !st) return Error{st.message()};
  if (Status st = number("rms_norm_eps", c.rms_norm_eps); !st) return Error{st.message()};
  if (c.hidden % c.heads != 0 || c.heads % c.kv_heads != 0) {
    return fail("hidden_size, num_attention_heads and num_key_value_heads do not divide");
  }
  if (const auto it = config.find("head_dim");
      it != config.end() && it->is_number_integer() && it->get<int64_t>() != c.hidden / c.heads) {
    return fail("head_dim " + std::to_string(it->get<int64_t>()) +
                " differs from hidden_size / num_attention_heads; not supported");
  }
  // Qwen2 always has Q/K/V biases (and no others); Llama's attention_bias would add o_proj's too.
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (qwen2) break;
    if (const auto it = config.find(key);
        it != config.end() && it->is_boolean() && it->get<bool>()) {
      return fail(std::string(key).append(" is true; bias terms are not supported"));
    }
  }
  if (const auto it = config.find("tie_word_embeddings"); it != config.end() && it->is_boolean()) {
    c.tied = it->get<bool>();
  }
  // Mistral's sliding window: within it attention is exact, so the context stops there. Qwen2
  // writes one too but uses it only with use_sliding_window.
  bool sliding = !qwen2;
  if (const auto it = config.find("use_sliding_window"); it != config.end() && it->is_boolean()) {
    sliding = it->get<bool>();
  }
  if (const auto it = config.find("sliding_window");
      sliding && it != config.end() && it->is_number_integer() && it->get<int64_t>() > 0) {
    c.context = std::min(c.context, it->get<int64_t>());
  }
  // RoPE: rope_theta and rope_scaling (transformers 4), or rope_parameters (transformers 5:
  // rope_theta and rope_type inside it). Llama-3.1's llama3 type becomes frequency factors.
  const json* llama3 = nullptr;
  std::string llama3_key;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const auto it = config.find(key);
    if (it == config.end() || !it->is_object()) continue;
    if (const auto theta = it->find("rope_theta"); theta != it->end()) {
      if (!theta->is_number() || !(theta->get<double>() > 0)) {
        return fail(std::string(key).append(".rope_theta must be a positive number"));
      }
      c.rope_theta = theta->get<double>();
    }
    std::string type;
    for (const char* type_key : {"rope_type", "type"}) {
      if (const auto t = it->find(type_key); type.empty() && t != it->end() && t->is_string()) {
        type = t->get<std::string>();
      }
    }
    if (type.empty() && std::string_view(key) == "rope_scaling") type = "unknown";
    if (type == "llama3" && !qwen2) {
      // After the loop: rope_theta may come later, in rope_parameters.
      llama3 = &*it;
      llama3_key = key;
    } else if (!type.empty() && type != "default") {
      c.rope_scaling = type;
    }
  }
  if (llama3 != nullptr) {
    auto factors = llama3_rope_factors(file, llama3_key, *llama3, c.rope_theta, c.hidden / c.heads);
    if (!factors) return factors.error();
    c.rope_factors = std::move(factors).value();
  }
  return c;
}

// Where one GGUF tensor's bytes come from.
struct Source {
  const SafetensorsTensor* tensor = nullptr;  // null: `computed` holds the f32 values
  int64_t permute_heads = 0;                  // Q / K: rows regrouped per head; 0: copied as is
  std::vector<float> computed;
};

// The tensors, the files holding them (sharded: model.safetensors.index.json).
struct Shards {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::pair<const SafetensorsTensor*, std::string>, std::less<>> tensors;
};

Result<Shards> open_shards(const fs::path& folder) {
  std::vector<fs::path> paths;
  const fs::path index_path = folder / "model.safetensors.index.json";
  auto index_text = read_text(index_path);
  if (!index_text) return index_text.error();
  if (index_text.value()) {
    const json index = json::parse(*index_text.value(), nullptr, false);
    const json* map = nullptr;
    if (!index.is_discarded() && index.is_object()) {
      if (const auto it = index.find("weight_map"); it != index.end() && it->is_object()) {
        map = &*it;
      }
    }
    if (map == nullptr) return Error{index_path.string() + ": no weight_map object"};
    std::set<std::string> names;
    for (const auto& [tensor, file] : map->items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        return Error{index_path.string() + ": weight_map['" + tensor + "'] is not a file name"};
      }
      names.insert(file.get<std::string>());
    }
    for (const std::string& name : names) paths.push_back(folder / name);
  } else {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(folder, ec)) {
      if (entry.path().extension() == ".safetensors") paths.push_back(entry.path());
    }
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty()) return Error{folder.string() + ": no *.safetensors file" + kNeeds};
  Shards shards;
  for (const fs::path& path : paths) {
    auto file = SafetensorsFile::open(path.string());
    if (!file) return file.error();
    for (const SafetensorsTensor& t : file.value()->tensors()) {
      const auto [it, fresh] = shards.tensors.emplace(t.name, std::pair(&t, path.string()));
      if (!fresh) {
        return Error{path.string() + ": tensor " + t.name + " is also in " + it->second.second};
      }
    }
    shards.files.push_back(std::move(file.value()));
  }
  return shards;
}

// Copies (and converts, and permutes) one tensor into the synthesized file's bytes.
void fill(const GgufTensorInfo& info, const Source& source, uint8_t* data) {
  if (source.tensor == nullptr) {
    std::memcpy(data, source.computed.data(), source.computed.size() * sizeof(float));
    return;
  }
  const SafetensorsTensor& t = *source.tensor;
  if (info.type == DType::kF32 && t.dtype != SafetensorsDType::kF32) {  // a norm or bias, widened
    for (int64_t i = 0; i < t.num_elements; ++i) {
      uint16_t half;
      std::memcpy(&half, t.data.data() + 2 * i, 2);
      const float v = t.dtype == SafetensorsDType::kBF16 ? kernels::bf16_to_fp32(half)
                                                         : kernels::fp16_to_fp32(half);
      std::memcpy(data + 4 * i, &v, 4);
    }
    return;
  }
  if (source.permute_heads == 0) {
    std::memcpy(data, t.data.data(), t.data.size());
    return;
  }
  // Hugging Face orders each head's rows [first halves..., second halves...]; GGUF interleaves
  // them: GGUF row 2i + j of a head is HF row j·(head_dim / 2) + i.
  const int64_t rows = t.shape[0];
  const auto row_bytes = static_cast<size_t>(t.data.size() / static_cast<size_t>(rows));
  const int64_t head_dim = rows / source.permute_heads, half = head_dim / 2;
  for (int64_t head = 0; head < source.permute_heads; ++head) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t to = head * head_dim + 2 * i + j, from = head * head_dim + j * half + i;
        std::memcpy(data + to * static_cast<int64_t>(row_bytes),
                    t.data.data() + from * static_cast<int64_t>(row_bytes), row_bytes);
      }
    }
  }
}

}  // namespace

bool is_hf_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

Result<std::unique_ptr<GgufFile>> open_hf_folder(const std::string& folder_name,
                                                 bool with_weights) {
  const fs::path folder(folder_name);
  if (!is_hf_folder(folder_name)) return Error{folder_name + ": not a directory"};
  const auto need = [&](const char* name) -> Result<std::string> {
    auto text = read_text(folder / name);
    if (!text) return text.error();
    if (!text.value()) return Error{folder_name + ": no " + name + kNeeds};
    return std::move(*text.value());
  };
  auto config_text = need("config.json");
  if (!config_text) return config_text.error();
  const std::string config_file = (folder / "config.json").string();
  const json config_json = json::parse(config_text.value(), nullptr, false);
  if (config_json.is_discarded()) return Error{config_file + ": not valid JSON"};
  auto config = read_config(config_file, config_json);
  if (!config) return config.error();
  const HfConfig& c = config.value();

  auto tokenizer_text = need("tokenizer.json");
  if (!tokenizer_text) return tokenizer_text.error();
  auto tokenizer_config = read_text(folder / "tokenizer_config.json");
  if (!tokenizer_config) return tokenizer_config.error();
  HfTokenizerSources sources;
  sources.folder = folder_name;
  sources.tokenizer_json = tokenizer_text.value();
  if (tokenizer_config.value()) sources.tokenizer_config = *tokenizer_config.value();
  sources.config = config_text.value();
  sources.vocab_size = c.vocab;
  auto tokenizer = read_hf_tokenizer(sources);
  if (!tokenizer) return tokenizer.error();
  if (tokenizer.value().chat_template.empty()) {  // newer folders keep it in a file of its own
    auto jinja = read_text(folder / "chat_template.jinja");
    if (!jinja) return jinja.error();
    if (jinja.value()) tokenizer.value().chat_template = *jinja.value();
  }

  Metadata m;
  put_string(m, "general.architecture", c.architecture);
  put_string(m, "general.name",
             folder.filename().empty() ? folder.parent_path().filename().string()
                                       : folder.filename().string());
  const std::string arch = c.architecture + ".";
  put_u32(m, arch + "block_count", c.num_layers);
  put_u32(m, arch + "context_length", c.context);
  put_u32(m, arch + "embedding_length", c.hidden);
  put_u32(m, arch + "feed_forward_length", c.ffn);
  put_u32(m, arch + "attention.head_count", c.heads);
  put_u32(m, arch + "attention.head_count_kv", c.kv_heads);
  put_u32(m, arch + "rope.dimension_count", c.hidden / c.heads);
  put_f32(m, arch + "rope.freq_base", c.rope_theta);
  put_f32(m, arch + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  put_u32(m, arch + "vocab_size", c.vocab);
  if (!c.rope_scaling.empty()) put_string(m, arch + "rope.scaling.type", c.rope_scaling);
  add_tokenizer_metadata(m, tokenizer.value());

  auto shards = open_shards(folder);
  if (!shards) return shards.error();

  // The GGUF name, the Hugging Face name and its [out, in] shape, of every tensor.
  const int64_t head_dim = c.hidden / c.heads, kv_dim = c.kv_heads * head_dim;
  struct Wanted {
    std::string gguf, hf;
    std::vector<int64_t> shape;
    bool norm = false;
    int64_t permute_heads = 0;
  };
  std::vector<Wanted> wanted = {
      {"token_embd.weight", "model.embed_tokens.weight", {c.vocab, c.hidden}},
      {"output_norm.weight", "model.norm.weight", {c.hidden}, true},
  };
  if (!c.tied) wanted.push_back({"output.weight", "lm_head.weight", {c.vocab, c.hidden}});
  // convert_hf_to_gguf.py permutes llama's Q/K rows into GGUF's adjacent RoPE pairs; qwen2
  // keeps Hugging Face's order (NEOX pairs) and has Q/K/V biases.
  const bool qwen2 = c.architecture == "qwen2";
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string g = std::string("blk.").append(std::to_string(i)).append(".");
    const std::string h = std::string("model.layers.").append(std::to_string(i)).append(".");
    wanted.push_back({g + "attn_norm.weight", h + "input_layernorm.weight", {c.hidden}, true});
    wanted.push_back({g + "attn_q.weight",
                      h + "self_attn.q_proj.weight",
                      {c.hidden, c.hidden},
                      false,
                      qwen2 ? 0 : c.heads});
    wanted.push_back({g + "attn_k.weight",
                      h + "self_attn.k_proj.weight",
                      {kv_dim, c.hidden},
                      false,
                      qwen2 ? 0 : c.kv_heads});
    if (qwen2) {
      wanted.push_back({g + "attn_q.bias", h + "self_attn.q_proj.bias", {c.hidden}, true});
      wanted.push_back({g + "attn_k.bias", h + "self_attn.k_proj.bias", {kv_dim}, true});
      wanted.push_back({g + "attn_v.bias", h + "self_attn.v_proj.bias", {kv_dim}, true});
    }
    wanted.push_back({g + "attn_v.weight", h + "self_attn.v_proj.weight", {kv_dim, c.hidden}});
    wanted.push_back(
        {g + "attn_output.weight", h + "self_attn.o_proj.weight", {c.hidden, c.hidden}});
    wanted.push_back(
        {g + "ffn_norm.weight", h + "post_attention_layernorm.weight", {c.hidden}, true});
    wanted.push_back({g + "ffn_gate.weight", h + "mlp.gate_proj.weight", {c.ffn, c.hidden}});
    wanted.push_back({g + "ffn_up.weight", h + "mlp.up_proj.weight", {c.ffn, c.hidden}});
    wanted.push_back({g + "ffn_down.weight", h + "mlp.down_proj.weight", {c.hidden, c.ffn}});
  }

  std::set<std::string, std::less<>> used;
  std::vector<GgufTensorInfo> infos;
  std::map<std::string, Source, std::less<>> sources_of;
  for (const Wanted& w : wanted) {
    const auto found = shards.value().tensors.find(w.hf);
    if (found == shards.value().tensors.end()) {
      return Error{folder_name + ": no tensor " + w.hf + " in the safetensors files"};
    }
    const SafetensorsTensor& t = *found->second.first;
    const std::string& file = found->second.second;
    used.insert(w.hf);
    if (t.dtype == SafetensorsDType::kOther) {
      return Error{file + ": tensor " + w.hf + " has dtype " + t.dtype_name +
                   "; only BF16, F16 and F32 are supported"};
    }
    if (t.shape != w.shape) {
      return Error{file + ": tensor " + w.hf + " has shape " + format_dims(t.shape) +
                   ", config.json implies " + format_dims(w.shape)};
    }
    GgufTensorInfo info;
    info.name = w.gguf;
    info.dims.assign(t.shape.rbegin(), t.shape.rend());  // ggml order: contiguous axis first
    info.type = w.norm || t.dtype == SafetensorsDType::kF32 ? DType::kF32
                : t.dtype == SafetensorsDType::kBF16        ? DType::kBF16
                                                            : DType::kF16;
    infos.push_back(std::move(info));
    Source& source = sources_of[w.gguf];
    source.tensor = &t;
    source.permute_heads = w.permute_heads;
  }
  for (const auto& [name, where] : shards.value().tensors) {
    // Tied models may still store lm_head; the rotary tables are recomputed.
    const bool ignorable = name == "lm_head.weight" || name.ends_with(".rotary_emb.inv_freq");
    if (!used.contains(name) && !ignorable) {
      return Error{where.second + ": unexpected tensor " + name + " (" +
                   (qwen2 ? "only Q/K/V biases are" : "bias terms are not") +
                   " supported; other architectures are not)"};
    }
  }

  if (!c.rope_factors.empty()) {
    GgufTensorInfo info;
    info.name = "rope_freqs.weight";
    info.dims = {static_cast<int64_t>(c.rope_factors.size())};
    info.type = DType::kF32;
    infos.push_back(std::move(info));
    Source& source = sources_of["rope_freqs.weight"];
    source.computed = c.rope_factors;
  }

  GgufFile::FillFn fill_fn;
  if (with_weights) {
    fill_fn = [&sources_of](const GgufTensorInfo& info, uint8_t* data) {
      fill(info, sources_of.find(info.name)->second, data);
    };
  }
  return GgufFile::synthesize(folder_name, std::move(m), std::move(infos), fill_fn);
}

}  // namespace lightserve::model
