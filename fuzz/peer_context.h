// A ServerContext of a live gRPC call on a Unix socket pair, as belayd's coordinator sees its
// callers: peer() is "fd:<n>", the form PeerRegistry resolves. The coordinator harness calls
// CoordinatorService's handlers directly with it.
#pragma once

#include "grpcpp/server_context.h"

namespace belay::fuzz {

struct PeerContext {
  grpc::ServerContext* context = nullptr;
  int fd = -1;  // the server's end: register credentials for it in a PeerRegistry
};

// Starts a server and a client on a socket pair the first time, makes one call and keeps it
// open for the life of the process (nothing is ever torn down).
const PeerContext& LivePeerContext();

}  // namespace belay::fuzz
