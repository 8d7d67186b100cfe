// A gtest suite that shares one real daemon (`lightserve serve`, a child process on ephemeral
// ports) among its tests and reaches it through a lightserve.v1.Generation stub. A derived suite
// starts it from its SetUpTestSuite with its own flags:
//
//   class MySuite : public lightserve::testing::GrpcDaemonSuite {
//    protected:
//     static void SetUpTestSuite() { start_daemon(model, {"--model", model, "--api-key", key}); }
//   };
//
// Tests are skipped when the model file or the binary is absent; the suite fails when the daemon
// died during the tests or did not drain and exit 0 on SIGTERM.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "lightserve/v1/generation.grpc.pb.h"
#include "tests/support/cli_runner.h"
#include "tests/support/daemon_process.h"

namespace lightserve::testing {

class GrpcDaemonSuite : public ::testing::Test {
 protected:
  // `model`: the file the arguments name, checked so that a missing one skips the tests.
  static void start_daemon(const std::string& model, const std::vector<std::string>& args) {
    model_ = model;
    if (!std::filesystem::exists(model) || !std::filesystem::exists(kLightserveBinary)) return;
    daemon_ = std::make_unique<DaemonProcess>(DaemonProcess::start(args));
    if (!daemon_->ok()) return;
    channel_ = grpc::CreateChannel(daemon_->grpc_target(), grpc::InsecureChannelCredentials());
    channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
    stub_ = lightserve::v1::Generation::NewStub(channel_);
  }
  static void TearDownTestSuite() {
    stub_.reset();
    channel_.reset();
    if (daemon_ && daemon_->ok()) {
      const bool was_running = daemon_->running();
      const int code = daemon_->stop(SIGTERM, 30);
      EXPECT_TRUE(was_running) << "the daemon died (" << code << "); stderr:\n"
                               << daemon_->stderr_text();
      EXPECT_EQ(code, 0) << "the daemon did not drain and exit 0; stderr:\n"
                         << daemon_->stderr_text();
    }
    daemon_.reset();
  }
  void SetUp() override {
    if (!std::filesystem::exists(model_)) GTEST_SKIP() << "model file absent: " << model_;
    if (!std::filesystem::exists(kLightserveBinary)) {
      GTEST_SKIP() << "lightserve binary absent: " << kLightserveBinary;
    }
    ASSERT_TRUE(daemon_ && daemon_->ok()) << (daemon_ ? daemon_->error() : "no daemon");
  }

  static inline std::string model_;
  static inline std::unique_ptr<DaemonProcess> daemon_;
  static inline std::shared_ptr<grpc::Channel> channel_;
  static inline std::unique_ptr<lightserve::v1::Generation::Stub> stub_;
};

}  // namespace lightserve::testing
