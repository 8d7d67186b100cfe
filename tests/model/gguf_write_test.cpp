// The GGUF writer (model/gguf_write.h): a dummy model written tensor by tensor reads back as the
// same file (metadata, tensor infos, every byte) that --load-format dummy makes in memory, and runs
// to the same logits; a file read from disk (non-default alignment, odd value types) rewrites to
// an equal file; bad values and unwritable paths are errors naming them, leaving no file behind.
#include "model/gguf_write.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"
#include "model/model_source.h"
#include "tests/support/gguf_writer.h"
#include "tests/support/shared_model.h"

namespace lightserve::model {
namespace {

namespace fs = std::filesystem;
using kernels::DType;

constexpr const char* kTiny = "layers=2,hidden=64,heads=4,kv_heads=2,ffn=128,vocab=300,context=256";

class GgufWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gguf_write_test." + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

ModelSource dummy(DType type, uint64_t seed) {
  ModelSource source;
  source.format = LoadFormat::kDummy;
  source.shape = kTiny;
  source.dummy_type = type;
  source.dummy_seed = seed;
  return source;
}

bool same_value(const GgufValue& a, const GgufValue& b) {
  if (a.type != b.type || a.data.index() != b.data.index()) return false;
  if (const auto* x = std::get_if<GgufArray>(&a.data)) {
    const auto& y = std::get<GgufArray>(b.data);
    if (x->element_type != y.element_type || x->values.size() != y.values.size()) return false;
    for (size_t i = 0; i < x->values.size(); ++i) {
      if (!same_value(x->values[i], y.values[i])) return false;
    }
    return true;
  }
  if (a.type == GgufValueType::kF32) {  // stored as a float: compare at that precision
    return static_cast<float>(std::get<double>(a.data)) ==
           static_cast<float>(std::get<double>(b.data));
  }
  return std::visit(
      [&b](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, GgufArray>) {
          return false;  // handled above
        } else {
          return x == std::get<T>(b.data);
        }
      },
      a.data);
}

// Same metadata, tensor infos and tensor bytes.
void expect_same_file(const GgufFile& expected, const GgufFile& actual) {
  ASSERT_EQ(expected.metadata().size(), actual.metadata().size());
  for (const auto& [key, value] : expected.metadata()) {
    const GgufValue* other = actual.find(key);
    ASSERT_NE(other, nullptr) << key;
    EXPECT_TRUE(same_value(value, *other)) << key;
  }
  ASSERT_EQ(expected.tensors().size(), actual.tensors().size());
  for (size_t i = 0; i < expected.tensors().size(); ++i) {
    const GgufTensorInfo& e = expected.tensors()[i];
    const GgufTensorInfo& a = actual.tensors()[i];
    EXPECT_EQ(e.name, a.name);
    EXPECT_EQ(e.dims, a.dims) << e.name;
    EXPECT_EQ(e.type, a.type) << e.name;
    EXPECT_EQ(e.offset, a.offset) << e.name;
    ASSERT_EQ(e.num_bytes, a.num_bytes) << e.name;
    EXPECT_EQ(std::memcmp(expected.tensor_data(e), actual.tensor_data(a),
                          static_cast<size_t>(e.num_bytes)),
              0)
        << e.name << ": the bytes differ";
  }
}

TEST_F(GgufWriteTest, ADummyModelWrittenTensorByTensorIsTheDummyModel) {
  for (DType type : {DType::kF16, DType::kQ4_0}) {
    SCOPED_TRACE(std::string(kernels::traits(type).name));
    const ModelSource source = dummy(type, 7);
    auto layout = open_model_file(source, /*with_weights=*/false);
    ASSERT_TRUE(layout.ok()) << layout.error().message;
    GgufWriteOptions options;
    options.fill = dummy_weight_fill(source);
    options.num_threads = 3;
    uint64_t last_done = 0, last_total = 0;
    int calls = 0;
    options.progress = [&](uint64_t done, uint64_t total) {
      EXPECT_GT(done, last_done);
      last_done = done;
      last_total = total;
      ++calls;
    };
    const std::string out = path("dummy.gguf");
    ASSERT_TRUE(write_gguf(*layout.value(), out, options).ok());
    EXPECT_EQ(calls, static_cast<int>(layout.value()->tensors().size()));
    EXPECT_EQ(last_done, last_total);
    EXPECT_FALSE(fs::exists(out + ".partial"));

    auto written = GgufFile::open(out);
    ASSERT_TRUE(written.ok()) << written.error().message;
    EXPECT_EQ(written.value()->version(), 3u);
    auto in_memory = open_model_file(source);
    ASSERT_TRUE(in_memory.ok()) << in_memory.error().message;
    expect_same_file(*in_memory.value(), *written.value());

    // And it runs as the dummy model does: the same logits, bit for bit.
    std::string why;
    auto backend = kernels::make_backend("cpu", 1, &why);
    ASSERT_NE(backend, nullptr) << why;
    auto from_file = LlamaModel::load(ModelSource(out), *backend);
    auto from_dummy = LlamaModel::load(source, *backend);
    ASSERT_TRUE(from_file.ok()) << from_file.error().message;
    ASSERT_TRUE(from_dummy.ok()) << from_dummy.error().message;
    const std::vector<int32_t> prompt = {1, 72, 105, 33, 260};
    EXPECT_EQ(testing::prompt_logits(*from_file.value(), prompt, false),
              testing::prompt_logits(*from_dummy.value(), prompt, false));
  }
}

TEST_F(GgufWriteTest, AFileReadFromDiskRewritesToAnEqualFile) {
  gguf_testing::TinyLlama tiny;
  tiny.matrix_type = DType::kF16;
  gguf_testing::GgufWriter w = tiny.writer();
  w.set_alignment(64);  // not the default: offsets and padding must follow it
  w.set_scalar<int8_t>("test.i8", GgufValueType::kI8, -5);
  w.set_scalar<uint16_t>("test.u16", GgufValueType::kU16, 65535);
  w.set_scalar<int64_t>("test.i64", GgufValueType::kI64, -(int64_t{1} << 40));
  w.set_scalar<double>("test.f64", GgufValueType::kF64, 0.1);
  w.set_scalar<uint8_t>("test.bool", GgufValueType::kBool, 1);
  w.set_i32_array("test.ids", {3, -1, 7});
  uint8_t seed = 1;
  for (const char* name : {"token_embd.weight", "blk.1.ffn_down.weight", "output_norm.weight"}) {
    gguf_testing::TensorSpec* t = w.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    t->data.resize(gguf_testing::GgufWriter::data_size(*t));
    for (uint8_t& b : t->data) b = seed += 37;  // distinct bytes: a misplaced tensor shows
  }
  const std::vector<uint8_t> bytes = w.build();
  const std::string original = path("original.gguf"), copy = path("copy.gguf");
  std::ofstream(original, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  auto read = GgufFile::open(original);
  ASSERT_TRUE(read.ok()) << read.error().message;
  ASSERT_TRUE(write_gguf(*read.value(), copy).ok());
  auto reread = GgufFile::open(copy);
  ASSERT_TRUE(reread.ok()) << reread.error().message;
  expect_same_file(*read.value(), *reread.value());
  EXPECT_EQ(reread.value()->tensors()[0].offset % 64, 0u);
}

TEST_F(GgufWriteTest, BadValuesAndPathsAreErrorsNamingThem) {
  std::map<std::string, GgufValue, std::less<>> metadata;
  metadata["general.name"] = GgufValue{GgufValueType::kU32, std::string("not a number")};
  auto header = encode_gguf_header(metadata, {}, 32);
  ASSERT_FALSE(header.ok());
  EXPECT_NE(header.error().message.find("general.name"), std::string::npos)
      << header.error().message;
  EXPECT_FALSE(encode_gguf_header({}, {}, 48).ok());  // not a power of two

  auto layout = open_model_file(dummy(DType::kQ8_0, 0), /*with_weights=*/false);
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  const std::string missing_dir = path("no/such/dir/model.gguf");
  const Status st = write_gguf(*layout.value(), missing_dir);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(missing_dir), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists(missing_dir));
}

}  // namespace
}  // namespace lightserve::model
