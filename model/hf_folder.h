// A Hugging Face model folder (config.json, tokenizer.json, tokenizer_config.json, one or more
// *.safetensors) opened as a GgufFile, so that everything above the file (config, tokenizer,
// chat template, backends) runs unchanged: config.json becomes llama.* metadata, tokenizer.json
// tokenizer.ggml.* metadata (hf_tokenizer.h), and the memory-mapped safetensors tensors are
// copied into GgufFile::synthesize's mapping under llama.cpp's names, in ggml order, with the
// Q and K rows permuted as llama.cpp's convert_hf_to_gguf.py permutes them (Hugging Face rotates
// the two halves of each head, GGUF adjacent pairs). BF16 / F16 / F32 matrices keep their type;
// norms become F32.
//
// Architectures: LlamaForCausalLM and MistralForCausalLM. RoPE scaling is passed on as
// llama.rope.scaling.type so that the model's config refuses it as it refuses a GGUF file's.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "model/gguf.h"

namespace lightserve::model {

// Whether `path` is a directory (then --model is a Hugging Face folder).
bool is_hf_folder(const std::string& path);

// Opens the folder. `with_weights` false reads the headers only and leaves the weights unwritten
// (metadata only, as for `info` without a run). Errors name the file and the problem.
Result<std::unique_ptr<GgufFile>> open_hf_folder(const std::string& folder,
                                                 bool with_weights = true);

}  // namespace lightserve::model
