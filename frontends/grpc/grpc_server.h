// The gRPC frontend (docs/design.md §7): service lightserve.v1.Generation (proto/lightserve/v1/) on
// the callback API, the standard grpc.health.v1.Health service, and server reflection.
//
// Every handler is a non-blocking reactor: it posts to the serving::ServingCore and is woken by the
// request's EventStream listener. A cancelled call aborts its request. With an API key
// configured every call needs the metadata `authorization: Bearer KEY` (UNAUTHENTICATED
// otherwise; health and reflection stay open).
#pragma once

#include <memory>

#include "base/status.h"
#include "serving/serving_core.h"

namespace lightserve::frontends {

class GrpcServer {
 public:
  // Listens on config().host:config().grpc_port of `engine` (port 0: an ephemeral one).
  // `engine` must outlive the server.
  static Result<std::unique_ptr<GrpcServer>> start(serving::ServingCore& engine);
  virtual ~GrpcServer() = default;

  virtual int port() const = 0;
  // Health reports NOT_SERVING (drain); Generation calls already get UNAVAILABLE from the engine.
  virtual void set_not_serving() = 0;
  // Stops accepting, cancels what is still open after `deadline_seconds`, and waits.
  virtual void shutdown(double deadline_seconds) = 0;
};

}  // namespace lightserve::frontends
