// How the CLI reaches belayd: the coordinator API over belayd's Unix socket, and the plain
// error messages and exit codes the commands share.
#pragma once

#include <memory>
#include <string>

#include "belay/v1/coordinator.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace belay::cli {

// The socket: --socket, else $BELAY_SOCKET, else <default state dir>/belayd.sock (the
// default of belayd --state-dir).
std::string SocketPath(const std::string& flag);

std::unique_ptr<v1::Coordinator::Stub> Connect(const std::string& socket_path);

// A context with a deadline (seconds; 0: none).
std::unique_ptr<grpc::ClientContext> CallContext(int deadline_s = 30);

// Prints a failed call plainly on stderr ("belay: <what>: <message>", with a hint when belayd
// is not reachable) and returns the exit code for it: kExitUnavailable, kExitNotFound,
// kExitInvalid or kExitFailure.
int ReportError(const grpc::Status& status, const std::string& what,
                const std::string& socket_path);

// A protobuf message as one line of JSON (field names as in the .proto).
std::string ToJson(const google::protobuf::Message& message);

}  // namespace belay::cli
