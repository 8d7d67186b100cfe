// Writes the seed corpus for gguf_fuzz: small synthetic GGUF files (valid LLaMA models of each
// supported tensor type, every metadata type) and, when given the real model, its first 16 KiB.
// Usage: make_gguf_seeds OUT_DIR [REAL_MODEL]
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/support/gguf_writer.h"

using lightserve::kernels::DType;
using lightserve::model::GgufValueType;
using namespace lightserve::model::gguf_testing;

namespace {

void write(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// One layer, hidden 32, 2 heads of 16, 1 KV head, ffn 32, vocab 8: a few KB per file.
TinyLlama smallest(DType type, bool tied) {
  TinyLlama tiny;
  tiny.num_layers = 1;
  tiny.hidden = 32;
  tiny.num_heads = 2;
  tiny.num_kv_heads = 1;
  tiny.ffn = 32;
  tiny.vocab = 8;
  tiny.context = 64;
  tiny.matrix_type = type;
  tiny.tied = tied;
  return tiny;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [REAL_MODEL]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  write(dir + "/tiny_llama_q8_0.seed", smallest(DType::kQ8_0, true).writer().build());
  write(dir + "/tiny_llama_q4_0_untied.seed", smallest(DType::kQ4_0, false).writer().build());
  write(dir + "/tiny_llama_q4_1.seed", smallest(DType::kQ4_1, true).writer().build());
  write(dir + "/tiny_llama_f16.seed", smallest(DType::kF16, true).writer().build());
  GgufWriter v2 = smallest(DType::kBF16, true).writer();
  v2.version = 2;
  v2.set_alignment(64);
  write(dir + "/tiny_llama_bf16_v2.seed", v2.build());

  GgufWriter every;
  every.set_scalar<uint8_t>("u8", GgufValueType::kU8, 1);
  every.set_scalar<int8_t>("i8", GgufValueType::kI8, -1);
  every.set_scalar<uint16_t>("u16", GgufValueType::kU16, 2);
  every.set_scalar<int16_t>("i16", GgufValueType::kI16, -2);
  every.set_u32("u32", 3);
  every.set_i32("i32", -3);
  every.set_f32("f32", 0.5f);
  every.set_scalar<uint8_t>("bool", GgufValueType::kBool, 1);
  every.set_string("string", "s");
  every.set_scalar<uint64_t>("u64", GgufValueType::kU64, 4);
  every.set_scalar<int64_t>("i64", GgufValueType::kI64, -4);
  every.set_scalar<double>("f64", GgufValueType::kF64, 0.25);
  every.set_string_array("strings", {"a", "b"});
  every.set_i32_array("ints", {1, 2});
  Bytes nested;
  nested.put<uint32_t>(static_cast<uint32_t>(GgufValueType::kArray)).put<uint64_t>(1);
  nested.put<uint32_t>(static_cast<uint32_t>(GgufValueType::kU8)).put<uint64_t>(1).put<uint8_t>(7);
  every.set_raw("nested", static_cast<uint32_t>(GgufValueType::kArray), nested.data);
  for (DType type :
       {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
    every.add_tensor(std::string(lightserve::kernels::traits(type).name), {32, 1}, type);
  }
  write(dir + "/every_type.seed", every.build());

  if (argc > 2) {  // the head of the real file: real metadata, cut mid-vocabulary
    std::ifstream in(argv[2], std::ios::binary);
    std::vector<uint8_t> head(16384);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    if (!head.empty()) write(dir + "/real_model_head_16k.seed", head);
  }
  return 0;
}
