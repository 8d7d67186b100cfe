// Raw gRPC calls for the tests: a unary call with request bytes through a generic stub, and the
// grpc.health.v1 check built on it (its proto is not compiled into the project).
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace lightserve::testing {

// One unary call to `method` with raw request bytes; `api_key` (if any) as a Bearer token.
inline grpc::Status raw_unary(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& method, const std::string& request_bytes,
                              std::string* reply = nullptr, const std::string& api_key = "",
                              double seconds = 60) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) { done.set_value(std::move(status)); });
  grpc::Status status = done.get_future().get();
  if (reply != nullptr && status.ok()) {
    std::vector<grpc::Slice> slices;
    (void)response.Dump(&slices);
    for (const auto& s : slices) reply->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return status;
}

// grpc.health.v1.Health/Check: HealthCheckRequest{service = 1}; the reply's field 1 is the status
// (1 SERVING, 2 NOT_SERVING), stored in *serving_status (0 when absent).
inline grpc::Status health_check(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& service, int* serving_status) {
  std::string request;
  if (!service.empty()) request = std::string("\x0a") + static_cast<char>(service.size()) + service;
  std::string reply;
  grpc::Status status = raw_unary(channel, "/grpc.health.v1.Health/Check", request, &reply);
  *serving_status = reply.size() == 2 && reply[0] == '\x08' ? reply[1] : 0;
  return status;
}

}  // namespace lightserve::testing
