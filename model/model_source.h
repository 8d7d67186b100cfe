// Where a model's weights come from: a GGUF file, or dummy weights made in memory at a named
// shape (as vLLM's --load-format dummy), for throughput and memory work at real shapes (7B-8B)
// where no file can be had. A dummy model is a GgufFile like any other (GgufFile::synthesize):
// LLaMA metadata for the shape, random weights of one type, and a byte-level SentencePiece
// vocabulary (<unk>, <s>, </s>, the 256 byte tokens, the space U+2581, then unused fillers up to
// the shape's vocabulary size), so every text encodes and decodes, one token per byte.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "kernels/dtype.h"
#include "model/gguf.h"

namespace lightserve::model {

// kGguf also opens a directory as a Hugging Face folder (hf_folder.h); kHfFolder insists on one.
enum class LoadFormat { kGguf, kDummy, kHfFolder };
// "gguf" | "auto" (both: a file is GGUF, a directory a Hugging Face folder) | "dummy" |
// "safetensors" (alias "hf")
Result<LoadFormat> parse_load_format(std::string_view text);
std::string_view to_string(LoadFormat format);

// The dimensions a dummy model is made at.
struct ModelShape {
  std::string name;  // a preset's name, or the spec text
  int32_t num_layers = 0;
  int32_t hidden_dim = 0;
  int32_t ffn_dim = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  float rope_freq_base = 10000.0f;
  float rms_norm_eps = 1e-5f;
  bool tied_embeddings = false;
  // "llama", or "qwen2": Q/K/V biases and NEOX RoPE, as llama.cpp's qwen2.
  std::string architecture = "llama";
};

// The presets' names, for --help and errors: llama-3-8b, llama-2-7b, mistral-7b, qwen2.5-7b,
// smollm2-135m.
std::vector<std::string> shape_presets();

// A preset name, or a spec "layers=L,hidden=H,heads=N,kv_heads=K,ffn=F,vocab=V,context=C"
// (optional: rope_base=B, eps=E, tied=0|1; vocab at least 260 for the byte vocabulary). Errors
// name the bad field.
Result<ModelShape> parse_shape(std::string_view text);

// Weight types a dummy model can be made in: f32, f16, bf16, q8_0, q4_0, q4_1.
Result<kernels::DType> parse_dummy_type(std::string_view text);

struct ModelSource {
  ModelSource() = default;
  ModelSource(std::string gguf_path) : path(std::move(gguf_path)) {}  // NOLINT: a path is a source
  ModelSource(const char* gguf_path) : path(gguf_path) {}             // NOLINT

  std::string path;  // kGguf: the file or Hugging Face folder; kHfFolder: the folder
  LoadFormat format = LoadFormat::kGguf;
  std::string shape = "llama-3-8b";                   // kDummy: a preset or a spec
  kernels::DType dummy_type = kernels::DType::kQ4_0;  // kDummy: the matrices' type
  uint64_t dummy_seed = 0;
  // Replaces the file's tokenizer.chat_template: a format name (chatml, llama3, llama3.1,
  // mistral-v1, llama2) or a template's text (model::ChatTemplate::from_text). Empty: the file's.
  std::string chat_template;

  // "models/x.gguf", or "dummy:llama-3-8b (Q4_0)": for logs and errors.
  std::string describe() const;
};

// Opens the source: maps the file, reads the Hugging Face folder, or makes the dummy model
// (`with_weights` false leaves the weights unwritten, for reading the metadata only). Errors name
// the source.
Result<std::unique_ptr<GgufFile>> open_model_file(const ModelSource& source,
                                                  bool with_weights = true);

// What open_model_file fills a dummy model's tensors with (source.dummy_seed; deterministic per
// tensor name), for writing a dummy model to a file tensor by tensor (gguf_write.h) without
// holding all its weights: the file then holds exactly the bytes `--load-format dummy` runs.
// Safe to call from several threads at once.
GgufFile::FillFn dummy_weight_fill(const ModelSource& source);

}  // namespace lightserve::model
