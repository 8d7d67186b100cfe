// gRPC server reflection v1 (grpc.reflection.v1.ServerReflection) over the process's generated
// descriptor pool: the stable name of the protocol gRPC 1.51 serves only as v1alpha (its
// reflection plugin, which the server keeps for older clients). Both resolve every listed
// service, grpc.health.v1.Health included (proto/grpc/health/v1/health.proto is linked in).
#pragma once

#include <grpcpp/support/server_callback.h>

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace lightserve::frontends {

class ReflectionV1Service final : public ::grpc::reflection::v1::ServerReflection::CallbackService {
 public:
  // `services`: the full names list_services answers.
  explicit ReflectionV1Service(std::vector<std::string> services);

  grpc::ServerBidiReactor<::grpc::reflection::v1::ServerReflectionRequest,
                          ::grpc::reflection::v1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* context) override;

  // The answer to one request (what the stream writes), for tests.
  ::grpc::reflection::v1::ServerReflectionResponse answer(
      const ::grpc::reflection::v1::ServerReflectionRequest& request) const;

 private:
  std::vector<std::string> services_;
};

// Makes sure grpc.health.v1's descriptor is in the generated pool (its object file linked).
void link_health_descriptor();

}  // namespace lightserve::frontends
