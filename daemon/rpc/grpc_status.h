// How belayd's gRPC services answer with an absl::Status: the one mapping every handler uses.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace belay::rpc {

// grpc::Status from absl::Status, code for code (both use the canonical codes) with the same
// message; OK carries no message.
grpc::Status ToGrpc(const absl::Status& s);

}  // namespace belay::rpc
