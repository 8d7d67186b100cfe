// `lightserve serve` refuses settings the model makes impossible as usage errors: exit 2, a
// message naming the key, before any weight is loaded (a port another server holds too); a file
// that cannot load is exit 1.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/cli_runner.h"

namespace lightserve::testing {
namespace {

const std::string kModel = LIGHTSERVE_TEST_MODEL;

class ServeStartupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << "no model at " << kModel;
    if (!std::filesystem::exists(kLightserveBinary)) GTEST_SKIP() << "no " << kLightserveBinary;
  }
  static CliResult serve(const std::string& args) {
    return run_lightserve("serve --model " + kModel + " --http-port 0 --grpc-port 0 " + args);
  }
};

TEST_F(ServeStartupTest, SettingsTheModelCannotHoldExitTwoBeforeLoading) {
  struct Case {
    const char* args;
    const char* message;
  };
  const Case cases[] = {
      {"--context 999999999", "engine.context 999999999 exceeds the model's training context"},
      {"--kv-budget 64KB", "engine.kv_budget"},
      {"--lazy-fraction 0.5 --sink 4 --window 1020 --context 8192 --kv-budget 1MB",
       "engine.kv_budget"},
  };
  for (const Case& c : cases) {
    const CliResult r = serve(c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("loading "), std::string::npos) << c.args << ": loaded weights first";
  }
}

// A listening socket on an ephemeral loopback port, closed at the end of the scope.
class TakenPort {
 public:
  TakenPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0 && listen(fd_, 1) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~TakenPort() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST_F(ServeStartupTest, APortAnotherServerHoldsIsExitTwoBeforeLoading) {
  const TakenPort taken;
  ASSERT_GT(taken.port(), 0);
  const std::string port = std::to_string(taken.port());
  for (const std::string flag : {"--http-port", "--grpc-port"}) {
    const std::string other = flag == "--http-port" ? "--grpc-port 0" : "--http-port 0";
    const CliResult r =
        run_lightserve("serve --model " + kModel + " " + other + " " + flag + " " + port);
    EXPECT_EQ(r.code, 2) << flag << "\n" << r.err;
    EXPECT_NE(r.err.find(flag + " " + port + ": cannot listen on 127.0.0.1:" + port +
                         ": Address already in use"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.err.find("loading "), std::string::npos) << flag << ": loaded weights first";
  }
}

TEST_F(ServeStartupTest, AFileThatDoesNotLoadIsExitOne) {
  const std::filesystem::path bad =
      std::filesystem::temp_directory_path() / "lightserve_startup_not_a_model.gguf";
  std::ofstream(bad) << "not a gguf file";
  const CliResult r =
      run_lightserve("serve --model " + bad.string() + " --http-port 0 --grpc-port 0");
  std::filesystem::remove(bad);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(bad.filename().string()), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lightserve::testing
