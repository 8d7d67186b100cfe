#include "app/model_flags.h"

#include <cstdio>

namespace lightserve::cli {

void add_model_flags(CLI::App* cmd, ModelFlags& flags) {
  cmd->add_option("--model,-m", flags.path,
                  "GGUF model file, or a Hugging Face folder (config.json, tokenizer.json, "
                  "*.safetensors in bf16/f16/f32; LlamaForCausalLM, MistralForCausalLM, "
                  "Qwen2ForCausalLM)")
      ->capture_default_str();
  cmd->add_option("--load-format", flags.load_format,
                  "gguf (or auto): the --model file, or the Hugging Face folder when --model "
                  "is a directory; safetensors: --model must be a Hugging Face folder; dummy: "
                  "random weights at --shape, with a byte vocabulary (throughput and memory at "
                  "real shapes, no file needed)")
      ->capture_default_str();
  std::string presets;
  for (const std::string& name : model::shape_presets()) {
    presets.append(presets.empty() ? "" : ", ").append(name);
  }
  cmd->add_option("--shape", flags.shape,
                  "Shape of the dummy model: " + presets +
                      ", or a spec layers=L,hidden=H,heads=N,kv_heads=K,ffn=F,vocab=V,context=C"
                      "[,rope_base=B,eps=E,tied=0|1]")
      ->capture_default_str();
  cmd->add_option(
      "--chat-template", flags.chat_template,
      "Chat format instead of the model file's template: chatml, llama3, llama3.1, "
      "mistral-v1, llama2, or a file holding a Jinja template of one of those families");
  cmd->add_option("--dummy-type", flags.dummy_type,
                  "Weight type of the dummy model: f32, f16, bf16, q8_0, q4_0 or q4_1")
      ->capture_default_str();
  cmd->add_option("--kv-dtype", flags.kv_dtype, serving::kKvDtypeHelp)->capture_default_str();
}

std::optional<kernels::DType> kv_type_or_report(const ModelFlags& flags) {
  const auto type = kernels::parse_kv_type(flags.kv_dtype);
  if (!type) {
    std::fprintf(stderr, "error: --kv-dtype: must be f16 or bf16, got '%s'\n",
                 flags.kv_dtype.c_str());
  }
  return type;
}

std::optional<model::ModelSource> model_source_or_report(const ModelFlags& flags) {
  model::ModelSource source(flags.path);
  auto format = model::parse_load_format(flags.load_format);
  if (!format) {
    std::fprintf(stderr, "error: --load-format: %s\n", format.error().message.c_str());
    return std::nullopt;
  }
  source.format = format.value();
  if (!flags.chat_template.empty()) {
    auto text = model::ChatTemplate::read_argument(flags.chat_template);
    if (!text) {
      std::fprintf(stderr, "error: --chat-template: %s\n", text.error().message.c_str());
      return std::nullopt;
    }
    source.chat_template = std::move(text).value();
  }
  if (source.format == model::LoadFormat::kDummy) {
    if (auto shape = model::parse_shape(flags.shape); !shape) {
      std::fprintf(stderr, "error: --shape: %s\n", shape.error().message.c_str());
      return std::nullopt;
    }
    auto type = model::parse_dummy_type(flags.dummy_type);
    if (!type) {
      std::fprintf(stderr, "error: --dummy-type: %s\n", type.error().message.c_str());
      return std::nullopt;
    }
    source.shape = flags.shape;
    source.dummy_type = type.value();
  }
  return source;
}

}  // namespace lightserve::cli
