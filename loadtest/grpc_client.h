// gRPC for the load generator: lightserve.v1.Generation/GenerateStream on the callback API (no
// thread per request: gRPC's own threads deliver the messages), and blocking GetModelInfo /
// GetServerInfo calls for the check before a run and the device count.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "base/status.h"
#include "lightserve/v1/generation.grpc.pb.h"
#include "loadtest/request.h"

namespace lightserve::loadtest {

class GrpcClient final : public Client {
 public:
  // `target`: host:port. One channel (one HTTP/2 connection) carries every request.
  GrpcClient(const std::string& target, GenerationSettings settings);
  void start(const RequestSpec& spec, std::function<void(StreamResult)> done) override;

  // GetModelInfo with a deadline: the model's name, or an error that says why the target does
  // not answer as a lightserve gRPC server.
  Result<std::string> model_name(double timeout_seconds);
  // GetServerInfo's num_devices: the devices the server runs on (0 when it does not say: a
  // server from before the field), or an error naming the gRPC status.
  Result<int> num_devices(double timeout_seconds);

  // The request message sent for `spec` (exposed for tests).
  v1::GenerateRequest request_message(const RequestSpec& spec) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
  GenerationSettings settings_;
};

// "UNAVAILABLE", "DEADLINE_EXCEEDED", ...
std::string grpc_code_name(grpc::StatusCode code);

}  // namespace lightserve::loadtest
