// The absl::Status → grpc::Status mapping of belayd's services.
#include "daemon/rpc/grpc_status.h"

#include <string>

namespace belay::rpc {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())),
                      std::string(s.message()));
}

}  // namespace belay::rpc
