// The default model, loaded once per test binary and shared by the test suites that run it
// (loading and repacking it per suite costs a second each). Null when the file is absent.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

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

}  // namespace lightserve::model::testing
