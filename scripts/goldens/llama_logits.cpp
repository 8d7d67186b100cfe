// llama.cpp's logits for given token ids, as JSON: the reference of the K-quant goldens
// (scripts/goldens/kquant_goldens.py builds this against the pinned llama.cpp and runs it).
//
//   llama_logits MODEL.gguf [--threads N] [--no-repack] IDS [IDS ...]
//
// IDS is a comma-separated list of token ids (no BOS is added). Each prompt is decoded as one
// batch in a fresh sequence (memory cleared), on the CPU, flash attention off, with logits for
// every position. Prints {"prompts": [{"ids": [...], "logits": [[vocab floats] per position]}]}.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

std::vector<llama_token> parse_ids(const std::string& text) {
  std::vector<llama_token> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) ids.push_back(static_cast<llama_token>(std::stoi(item)));
  return ids;
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [--threads N] [--no-repack] IDS [IDS ...]\n",
                 argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  int threads = 1;
  bool repack = true;
  std::vector<std::vector<llama_token>> prompts;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (arg == "--no-repack") {
      repack = false;
    } else {
      prompts.push_back(parse_ids(arg));
    }
  }
  size_t longest = 1;
  for (const auto& p : prompts) longest = std::max(longest, p.size());

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  llama_model_params mparams = llama_model_default_params();
  mparams.n_gpu_layers = 0;
  mparams.use_extra_bufts = repack;  // llama.cpp's --no-repack clears this
  llama_model* model = llama_model_load_from_file(path.c_str(), mparams);
  if (model == nullptr) {
    std::fprintf(stderr, "cannot load %s\n", path.c_str());
    return 1;
  }
  llama_context_params cparams = llama_context_default_params();
  cparams.n_ctx = static_cast<uint32_t>(longest);
  cparams.n_batch = static_cast<uint32_t>(longest);
  cparams.n_ubatch = static_cast<uint32_t>(longest);
  cparams.n_seq_max = 1;
  cparams.n_threads = threads;
  cparams.n_threads_batch = threads;
  cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cparams.offload_kqv = false;
  cparams.op_offload = false;
  cparams.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cparams);
  if (ctx == nullptr) {
    std::fprintf(stderr, "cannot create a context\n");
    return 1;
  }
  const int32_t vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

  std::printf("{\"vocab\": %d, \"threads\": %d, \"repack\": %s, \"prompts\": [", vocab, threads,
              repack ? "true" : "false");
  for (size_t p = 0; p < prompts.size(); ++p) {
    const auto& ids = prompts[p];
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_batch batch = llama_batch_init(static_cast<int32_t>(ids.size()), 0, 1);
    for (size_t i = 0; i < ids.size(); ++i) {
      batch.token[i] = ids[i];
      batch.pos[i] = static_cast<llama_pos>(i);
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    batch.n_tokens = static_cast<int32_t>(ids.size());
    if (llama_decode(ctx, batch) != 0) {
      std::fprintf(stderr, "llama_decode failed on prompt %zu\n", p);
      return 1;
    }
    std::printf("%s\n{\"ids\": [", p == 0 ? "" : ",");
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i == 0 ? "" : ", ", ids[i]);
    std::printf("], \"logits\": [");
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* row = llama_get_logits_ith(ctx, static_cast<int32_t>(i));
      std::printf("%s[", i == 0 ? "" : ",\n");
      for (int32_t v = 0; v < vocab; ++v) std::printf("%s%.9g", v == 0 ? "" : ", ", row[v]);
      std::printf("]");
    }
    std::printf("]}");
    llama_batch_free(batch);
  }
  std::printf("]}\n");
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
