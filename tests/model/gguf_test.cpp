// GGUF reader tests: the real default model, a synthetic file with every metadata and tensor type,
// and a table of bad files that must each produce a specific error (never a crash).
#include "model/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "tests/support/gguf_writer.h"

namespace lightserve::model {
namespace {

using gguf_testing::Bytes;
using gguf_testing::GgufWriter;
using gguf_testing::TensorSpec;
using gguf_testing::TinyLlama;
using kernels::DType;

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Where the data section of a parsed file begins (tensor_data minus the tensor's offset).
uint64_t data_offset(const GgufFile& file, std::span<const uint8_t> bytes) {
  const GgufTensorInfo& first = file.tensors().front();
  return static_cast<uint64_t>(file.tensor_data(first) - bytes.data()) - first.offset;
}

Result<std::unique_ptr<GgufFile>> parse(const std::vector<uint8_t>& bytes) {
  return GgufFile::parse(bytes, "test.gguf");
}

// ---------------------------------------------------------------------------------------------
// The real model.

class RealModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = gguf_testing::test_model_path();
    if (!std::filesystem::exists(path_)) {
      GTEST_SKIP() << "default model not found at " << path_
                   << " (set LIGHTSERVE_TEST_MODEL or run scripts/test.sh to fetch it)";
    }
  }
  std::string path_;
};

TEST_F(RealModelTest, ParsesHeaderMetadataAndTensors) {
  auto file = GgufFile::open(path_);
  ASSERT_TRUE(file.ok()) << file.error().message;
  const GgufFile& f = *file.value();
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 33u);
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.get_string("general.architecture").value(), "llama");
  EXPECT_EQ(f.get_int("llama.block_count").value(), 30);
  EXPECT_EQ(f.get_int("llama.embedding_length").value(), 576);
  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.error().message;
  ASSERT_TRUE(tokens.value().has_value());
  EXPECT_EQ(tokens.value()->size(), 49152u);

  const GgufTensorInfo* embd = f.tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, DType::kQ8_0);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd->num_elements, 576 * 49152);
  EXPECT_EQ(embd->num_bytes, 576 / 32 * 34 * 49152);
  const GgufTensorInfo* q = f.tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, DType::kQ4_1);
  const GgufTensorInfo* norm = f.tensor("blk.29.ffn_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->type, DType::kF32);
  EXPECT_EQ(f.tensor("output.weight"), nullptr);  // tied embeddings

  // Every tensor lies inside the file.
  for (const auto& t : f.tensors()) {
    const uint8_t* begin = f.tensor_data(t);
    EXPECT_LE(static_cast<uint64_t>(begin - f.tensor_data(f.tensors().front())) + t.num_bytes,
              f.file_size());
  }
}

TEST_F(RealModelTest, PrefaultReportsProgressInAboutOnePercentSteps) {
  auto file = GgufFile::open(path_);
  ASSERT_TRUE(file.ok()) << file.error().message;
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  file.value()->prefault([&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); });
  ASSERT_FALSE(calls.empty());
  EXPECT_GE(calls.size(), 50u);
  EXPECT_LE(calls.size(), 110u);
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GE(calls[i].first, calls[i - 1].first);
  EXPECT_EQ(calls.back().first, calls.back().second);
  file.value()->prefault(nullptr);  // no callback is fine too
}

// Cuts the real file at 50 points through the header and 50 through the data; each prefix must
// be rejected with a "truncated" error (or "not a GGUF file" inside the magic).
TEST_F(RealModelTest, EveryTruncationIsAnError) {
  const std::vector<uint8_t> bytes = read_file(path_);
  auto whole = GgufFile::parse(bytes, "model.gguf");
  ASSERT_TRUE(whole.ok()) << whole.error().message;
  const uint64_t header_end = data_offset(*whole.value(), bytes);
  uint64_t data_end = 0;
  for (const auto& t : whole.value()->tensors()) {
    data_end = std::max<uint64_t>(data_end, header_end + t.offset + t.num_bytes);
  }
  ASSERT_LE(data_end, bytes.size());

  std::vector<uint64_t> cuts;
  for (uint64_t k = 0; k < 50; ++k) {
    cuts.push_back(header_end * k / 50);
    cuts.push_back(header_end + (data_end - header_end) * k / 50);
  }
  cuts.push_back(data_end - 1);
  for (uint64_t cut : cuts) {
    auto file = GgufFile::parse(std::span(bytes).first(cut), "model.gguf");
    ASSERT_FALSE(file.ok()) << "prefix of " << cut << " bytes parsed";
    const std::string& message = file.error().message;
    EXPECT_EQ(message.rfind("model.gguf: ", 0), 0u) << message;
    if (cut == 0) {
      EXPECT_NE(message.find("empty"), std::string::npos) << message;
    } else {
      EXPECT_NE(message.find("truncated"), std::string::npos) << cut << ": " << message;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A synthetic file with every metadata type and every supported tensor type.

GgufWriter every_type_writer() {
  GgufWriter w;
  w.set_scalar<uint8_t>("u8", GgufValueType::kU8, 200);
  w.set_scalar<int8_t>("i8", GgufValueType::kI8, -100);
  w.set_scalar<uint16_t>("u16", GgufValueType::kU16, 60000);
  w.set_scalar<int16_t>("i16", GgufValueType::kI16, -30000);
  w.set_u32("u32", 4000000000u);
  w.set_i32("i32", -2000000000);
  w.set_f32("f32", 1.5f);
  w.set_scalar<uint8_t>("bool", GgufValueType::kBool, 1);
  w.set_string("string", "héllo\n");
  w.set_scalar<uint64_t>("u64", GgufValueType::kU64, std::numeric_limits<uint64_t>::max());
  w.set_scalar<int64_t>("i64", GgufValueType::kI64, std::numeric_limits<int64_t>::min());
  w.set_scalar<double>("f64", GgufValueType::kF64, -2.25);
  w.set_string_array("strings", {"a", "", "ccc"});
  w.set_i32_array("ints", {1, -2, 3});
  // An array of two arrays of u16: [[1, 2], [3]].
  Bytes nested;
  nested.put<uint32_t>(static_cast<uint32_t>(GgufValueType::kArray)).put<uint64_t>(2);
  nested.put<uint32_t>(static_cast<uint32_t>(GgufValueType::kU16)).put<uint64_t>(2);
  nested.put<uint16_t>(1).put<uint16_t>(2);
  nested.put<uint32_t>(static_cast<uint32_t>(GgufValueType::kU16)).put<uint64_t>(1);
  nested.put<uint16_t>(3);
  w.set_raw("nested", static_cast<uint32_t>(GgufValueType::kArray), nested.data);
  w.set_alignment(64);

  // One tensor per supported type, each with distinct bytes.
  const std::pair<DType, std::vector<uint64_t>> specs[] = {
      {DType::kF32, {3, 2}},         {DType::kF16, {5}},
      {DType::kBF16, {2, 2, 2}},     {DType::kQ4_0, {64, 2}},
      {DType::kQ4_1, {32, 1, 1, 2}}, {DType::kQ8_0, {32, 3}},
  };
  uint8_t fill = 1;
  for (const auto& [type, dims] : specs) {
    TensorSpec spec{
        std::string(kernels::traits(type).name), dims, static_cast<uint32_t>(type), {}, {}, {}};
    spec.data.resize(GgufWriter::data_size(spec));
    for (auto& byte : spec.data) byte = fill++;
    w.add_tensor(std::move(spec));
  }
  return w;
}

TEST(GgufSynthetic, EveryValueAndTensorTypeRoundTrips) {
  GgufWriter w = every_type_writer();
  const std::vector<uint8_t> bytes = w.build();
  auto file = parse(bytes);
  ASSERT_TRUE(file.ok()) << file.error().message;
  const GgufFile& f = *file.value();
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 16u);

  EXPECT_EQ(f.get_int("u8").value(), 200);
  EXPECT_EQ(f.get_int("i8").value(), -100);
  EXPECT_EQ(f.get_int("u16").value(), 60000);
  EXPECT_EQ(f.get_int("i16").value(), -30000);
  EXPECT_EQ(f.get_int("u32").value(), 4000000000);
  EXPECT_EQ(f.get_int("i32").value(), -2000000000);
  EXPECT_EQ(f.get_float("f32").value(), 1.5);
  EXPECT_EQ(f.get_bool("bool").value(), true);
  EXPECT_EQ(f.get_string("string").value(), "héllo\n");
  EXPECT_EQ(std::get<uint64_t>(f.find("u64")->data), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.get_int("i64").value(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.get_float("f64").value(), -2.25);
  EXPECT_EQ(f.get_float("u16").value(), 60000.0);  // integers read as floats
  EXPECT_EQ(f.get_string_array("strings").value(), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.get_int_array("ints").value(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get_int("general.alignment").value(), 64);

  const GgufValue* nested = f.find("nested");
  ASSERT_NE(nested, nullptr);
  const auto& outer = std::get<GgufArray>(nested->data);
  EXPECT_EQ(outer.element_type, GgufValueType::kArray);
  ASSERT_EQ(outer.values.size(), 2u);
  const auto& first = std::get<GgufArray>(outer.values[0].data);
  EXPECT_EQ(first.element_type, GgufValueType::kU16);
  ASSERT_EQ(first.values.size(), 2u);
  EXPECT_EQ(std::get<uint64_t>(first.values[1].data), 2u);
  EXPECT_EQ(std::get<GgufArray>(outer.values[1].data).values.size(), 1u);

  // Absent keys are nullopt; present keys of the wrong type are errors naming the key.
  EXPECT_FALSE(f.get_int("absent").value().has_value());
  auto wrong = f.get_int("string");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message.find("string is string, expected an integer"), std::string::npos)
      << wrong.error().message;
  EXPECT_FALSE(f.get_string("u8").ok());
  EXPECT_FALSE(f.get_bool("u8").ok());
  EXPECT_FALSE(f.get_float("string").ok());
  EXPECT_FALSE(f.get_string_array("ints").ok());
  EXPECT_FALSE(f.get_int_array("strings").ok());
  auto too_big = f.get_int("u64");
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.error().message.find("does not fit"), std::string::npos);

  ASSERT_EQ(f.tensors().size(), 6u);
  uint8_t fill = 1;
  for (const GgufTensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.name, kernels::traits(t.type).name);
    EXPECT_EQ(t.offset % 64, 0u) << t.name;
    const uint8_t* data = f.tensor_data(t);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % 64,
              reinterpret_cast<uintptr_t>(bytes.data()) % 64);
    for (int64_t i = 0; i < t.num_bytes; ++i) {
      ASSERT_EQ(data[i], fill++) << t.name << " byte " << i;
    }
  }
  EXPECT_EQ(f.tensor("Q4_1")->dims, (std::vector<int64_t>{32, 1, 1, 2}));
  EXPECT_EQ(f.tensor("Q4_1")->num_bytes, 40);
  EXPECT_EQ(f.tensor("BF16")->num_elements, 8);
  EXPECT_EQ(f.tensor("missing"), nullptr);
}

TEST(GgufSynthetic, Version2AndAnEmptyFileParse) {
  GgufWriter w = every_type_writer();
  w.version = 2;
  EXPECT_TRUE(parse(w.build()).ok());
  GgufWriter empty;
  auto file = parse(empty.build());
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_TRUE(file.value()->tensors().empty());
  file.value()->prefault([](uint64_t, uint64_t) {});
}

// Every strict prefix of a small valid file's header, and every 61st one through its data, is
// rejected with no crash and a clear message.
TEST(GgufSynthetic, EveryPrefixIsRejected) {
  const std::vector<uint8_t> bytes = TinyLlama{}.writer().build();
  auto whole = parse(bytes);
  ASSERT_TRUE(whole.ok());
  const uint64_t header_end = data_offset(*whole.value(), bytes);
  for (size_t cut = 0; cut < bytes.size(); cut += cut < header_end ? 1 : 61) {
    auto file = GgufFile::parse(std::span(bytes).first(cut), "tiny.gguf");
    ASSERT_FALSE(file.ok()) << "prefix of " << cut << " bytes parsed";
    const std::string& message = file.error().message;
    const bool explained = message.find("truncated") != std::string::npos ||
                           message.find("not a GGUF file") != std::string::npos ||
                           message.find("empty") != std::string::npos;
    EXPECT_TRUE(explained) << cut << ": " << message;
  }
}

TEST(GgufOpen, FileSystemErrorsNameThePath) {
  auto missing = GgufFile::open("/nonexistent/model.gguf");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("/nonexistent/model.gguf"), std::string::npos);
  EXPECT_NE(missing.error().message.find("No such file"), std::string::npos);

  EXPECT_FALSE(GgufFile::open("/tmp").ok());

  const std::string empty_path =
      ::testing::TempDir() + "/empty_" + std::to_string(getpid()) + ".gguf";
  { std::ofstream out(empty_path); }
  auto empty = GgufFile::open(empty_path);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message.find("empty"), std::string::npos);

  // A valid file round-trips through open() (mmap) as well as parse().
  const std::vector<uint8_t> bytes = every_type_writer().build();
  {
    std::ofstream out(empty_path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  auto mapped = GgufFile::open(empty_path);
  ASSERT_TRUE(mapped.ok()) << mapped.error().message;
  EXPECT_EQ(mapped.value()->file_size(), bytes.size());
  EXPECT_EQ(mapped.value()->tensors().size(), 6u);
  std::filesystem::remove(empty_path);
}

// ---------------------------------------------------------------------------------------------
// The bad-file corpus: each case breaks one thing and names the phrase its error must contain.

struct BadFile {
  std::string name;
  std::function<std::vector<uint8_t>()> build;
  std::string expected;
};

// A one-tensor file to break.
GgufWriter one_tensor(std::vector<uint64_t> dims = {32, 2}, uint32_t type = 0) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.add_tensor(TensorSpec{"blk.0.attn_q.weight", std::move(dims), type, {}, {}, {}});
  return w;
}

std::vector<uint8_t> with(GgufWriter w, const std::function<void(GgufWriter&)>& change) {
  change(w);
  return w.build();
}

constexpr uint32_t kArray = static_cast<uint32_t>(GgufValueType::kArray);
constexpr uint32_t kString = static_cast<uint32_t>(GgufValueType::kString);
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

std::vector<BadFile> bad_files() {
  return {
      {"empty", [] { return std::vector<uint8_t>{}; }, "empty file"},
      {"zip magic", [] { return std::vector<uint8_t>{'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0, 0}; },
       "not a GGUF file (magic 'PK\\x03\\x04', expected 'GGUF')"},
      {"short magic",
       [] {
         return std::vector<uint8_t>{'G', 'G'};
       },
       "not a GGUF file"},
      {"version 1", [] { return with(one_tensor(), [](auto& w) { w.version = 1; }); },
       "GGUF version 1 is not supported"},
      {"version 99", [] { return with(one_tensor(), [](auto& w) { w.version = 99; }); },
       "GGUF version 99 is not supported"},
      {"big endian", [] { return with(one_tensor(), [](auto& w) { w.version = 0x03000000; }); },
       "big-endian"},
      {"header only", [] { return std::vector<uint8_t>{'G', 'G', 'U', 'F', 3, 0, 0}; },
       "truncated: header"},
      {"huge tensor count",
       [] { return with(one_tensor(), [](auto& w) { w.tensor_count_override = kMax; }); },
       "tensors, more than"},
      {"huge metadata count",
       [] { return with(one_tensor(), [](auto& w) { w.metadata_count_override = 1u << 30; }); },
       "metadata keys, more than"},
      {"huge string length",
       [] {
         return with(one_tensor(), [](auto& w) {
           w.set_raw("general.name", kString, Bytes().put<uint64_t>(kMax - 3).data);
         });
       },
       "truncated: metadata key 2 of 2 (general.name) ends at byte 18446744073709551615"},
      {"huge array count",
       [] {
         return with(one_tensor(), [](auto& w) {
           w.set_raw("tokenizer.ggml.tokens", kArray,
                     Bytes().put<uint32_t>(kString).put<uint64_t>(uint64_t{1} << 60).data);
         });
       },
       "truncated: metadata key 2 of 2 (tokenizer.ggml.tokens)"},
      {"huge u8 array count",
       [] {
         return with(one_tensor(), [](auto& w) {
           w.set_raw("x", kArray, Bytes().put<uint32_t>(0).put<uint64_t>(kMax).data);
         });
       },
       "truncated: metadata key 2 of 2 (x) ends at byte 18446744073709551615"},
      {"unknown value type 13",
       [] { return with(one_tensor(), [](auto& w) {
              w.set_raw("x", 13, {1, 2, 3, 4});
            }); },
       "metadata key 2 of 2 (x): unknown value type 13"},
      {"array of unknown type",
       [] {
         return with(one_tensor(), [](auto& w) {
           w.set_raw("x", kArray, Bytes().put<uint32_t>(77).put<uint64_t>(1).data);
         });
       },
       "array of unknown value type 77"},
      {"arrays nested too deep",
       [] {
         return with(one_tensor(), [](auto& w) {
           Bytes b;
           for (int i = 0; i < 100; ++i) b.put<uint32_t>(kArray).put<uint64_t>(1);
           b.put<uint32_t>(0).put<uint64_t>(0);
           w.set_raw("x", kArray, b.data);
         });
       },
       "nested more than"},
      {"bad bool", [] { return with(one_tensor(), [](auto& w) { w.set_raw("x", 7, {2}); }); },
       "bool value is 2"},
      {"duplicate key",
       [] {
         return with(one_tensor(), [](auto& w) {
           w.add_raw("general.architecture", kString, Bytes().put_string("x").data);
         });
       },
       "duplicate key general.architecture"},
      {"alignment zero",
       [] { return with(one_tensor(), [](auto& w) { w.set_u32("general.alignment", 0); }); },
       "general.alignment must be a power of two"},
      {"alignment 48",
       [] { return with(one_tensor(), [](auto& w) { w.set_u32("general.alignment", 48); }); },
       "general.alignment must be a power of two"},
      {"alignment as string",
       [] { return with(one_tensor(), [](auto& w) { w.set_string("general.alignment", "32"); }); },
       "general.alignment must be a power of two"},
      {"tensor offset past end",
       [] {
         return with(one_tensor(),
                     [](auto& w) { w.find_tensor("blk.0.attn_q.weight")->offset = 1 << 20; });
       },
       "truncated: tensor blk.0.attn_q.weight data (offset 1048576, 256 bytes) ends at byte"},
      {"tensor offset near 2^64",
       [] {
         return with(one_tensor(),
                     [](auto& w) { w.find_tensor("blk.0.attn_q.weight")->offset = kMax - 31; });
       },
       "ends at byte 18446744073709551615 past end of file"},
      {"misaligned offset",
       [] {
         return with(one_tensor(),
                     [](auto& w) { w.find_tensor("blk.0.attn_q.weight")->offset = 17; });
       },
       "data offset 17 is not a multiple of the alignment 32"},
      {"zero dim",
       [] {
         return one_tensor({32, 0}).build();
       },
       "tensor blk.0.attn_q.weight has invalid dimension 1 = 0"},
      {"negative dim",
       [] {
         return one_tensor({32, static_cast<uint64_t>(-5)}).build();
       },
       "invalid dimension 1 = 18446744073709551611"},
      {"dim 2^40",
       [] {
         return one_tensor({32, uint64_t{1} << 40}).build();
       },
       "truncated: tensor blk.0.attn_q.weight data"},
      {"product overflow",
       [] {
         return one_tensor({uint64_t{1} << 32, uint64_t{1} << 32}).build();
       },
       "dimensions overflow"},
      {"byte size overflow",
       [] {
         return one_tensor({uint64_t{1} << 31, uint64_t{1} << 31}).build();
       },
       "byte size overflows"},
      {"n_dims 5",
       [] {
         return one_tensor({32, 1, 1, 1, 1}).build();
       },
       "has 5 dimensions; lightserve supports 1 to 4"},
      {"n_dims 0",
       [] {
         return with(one_tensor(), [](auto& w) {
           w.find_tensor("blk.0.attn_q.weight")->num_dims = 0;
           w.find_tensor("blk.0.attn_q.weight")->dims = {};
         });
       },
       "has 0 dimensions"},
      {"unknown tensor type 200",
       [] {
         return one_tensor({32, 2}, 200).build();
       },
       "tensor blk.0.attn_q.weight has unknown type id 200, which lightserve does not support"},
      {"Q2_K tensor",
       [] {
         return one_tensor({256, 2}, 10).build();
       },
       "tensor blk.0.attn_q.weight has type Q2_K, which lightserve does not support (supported: "
       "F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16)"},
      {"partial block",
       [] {
         return one_tensor({33, 2}, static_cast<uint32_t>(DType::kQ4_1)).build();
       },
       "rows of 33 values are not a whole number of Q4_1 blocks"},
      {"duplicate tensor name",
       [] {
         return with(one_tensor(),
                     [](auto& w) { w.add_tensor("blk.0.attn_q.weight", {32}, DType::kF32); });
       },
       "duplicate tensor name blk.0.attn_q.weight (tensor info 2 of 2)"},
  };
}

TEST(GgufBadFiles, EachProducesItsError) {
  for (const BadFile& bad : bad_files()) {
    SCOPED_TRACE(bad.name);
    const std::vector<uint8_t> bytes = bad.build();
    auto file = GgufFile::parse(bytes, "bad.gguf");
    ASSERT_FALSE(file.ok()) << bad.name << " parsed";
    const std::string& message = file.error().message;
    EXPECT_EQ(message.rfind("bad.gguf: ", 0), 0u) << message;
    EXPECT_NE(message.find(bad.expected), std::string::npos)
        << "expected \"" << bad.expected << "\" in \"" << message << "\"";
  }
}

TEST(GgufBadFiles, TheCorpusBuildersMakeValidFilesWhenUnbroken) {
  EXPECT_TRUE(parse(one_tensor().build()).ok());
  EXPECT_TRUE(parse(one_tensor({256, 2}, static_cast<uint32_t>(DType::kQ4_0)).build()).ok());
}

}  // namespace
}  // namespace lightserve::model
