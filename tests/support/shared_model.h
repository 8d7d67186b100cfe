// The default model, loaded once per test binary and shared by the test suites that run it
// (loading and repacking it per suite costs a second each). Null when the file is absent.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"
#include "tests/support/gguf_writer.h"

namespace lightserve::model::testing {

inline LlamaModel* shared_model() {
  struct Loaded {
    std::unique_ptr<kernels::Backend> backend;
    std::unique_ptr<LlamaModel> model;
  };
  static const Loaded loaded = [] {
    Loaded l;
    const std::string path = gguf_testing::test_model_path();
    if (!std::filesystem::exists(path)) return l;
    l.backend = kernels::make_cpu_backend(0);
    auto model = LlamaModel::load(path, *l.backend);
    if (!model) {
      ADD_FAILURE() << model.error().message;
      return l;
    }
    l.model = std::move(model).value();
    return l;
  }();
  return loaded.model.get();
}

// Runs `ids` as one prompt through a fresh cache of `model`: the logits of every position
// (all_logits) or of the last one, vocab_size floats each; empty after a test failure.
inline std::vector<float> prompt_logits(LlamaModel& model, const std::vector<int32_t>& ids,
                                        bool all_positions) {
  SequenceCache cache(model.config(), static_cast<int32_t>(ids.size()) + 1);
  BatchEntry entry;
  entry.cache = &cache;
  entry.tokens = ids;
  entry.all_logits = all_positions;
  std::vector<float> logits;
  const Status s = model.forward({&entry, 1}, logits);
  EXPECT_TRUE(s.ok()) << s.message();
  return logits;
}

}  // namespace lightserve::model::testing
