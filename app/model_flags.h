// The model-source flags shared by generate, info and bench: --model, --load-format, --shape,
// --dummy-type (serve has the same as config keys, serving/serve_config.cpp).
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "model/model_source.h"
#include "model/tokenizer.h"
#include "serving/model_loading.h"

namespace lightserve::cli {

struct ModelFlags {
  std::string path = serving::default_model_path();
  std::string load_format = "gguf";
  std::string shape = "llama-3-8b";
  std::string dummy_type = "q4_0";
  std::string chat_template;     // a format name or a template file; empty: the file's
  std::string kv_dtype = "f16";  // the KV cache's element type: f16 | bf16
};

void add_model_flags(CLI::App* cmd, ModelFlags& flags);

// The source the flags name; nullopt after printing the error (a usage error: exit 2).
std::optional<model::ModelSource> model_source_or_report(const ModelFlags& flags);

// The KV cache type --kv-dtype names; nullopt after printing the error (a usage error: exit 2).
std::optional<kernels::DType> kv_type_or_report(const ModelFlags& flags);

}  // namespace lightserve::cli
