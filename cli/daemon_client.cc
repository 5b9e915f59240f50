// Connection to belayd and shared error reporting.
#include "cli/daemon_client.h"

#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "google/protobuf/util/json_util.h"

namespace belay::cli {

std::string SocketPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* s = std::getenv("BELAY_SOCKET"); s != nullptr && *s != '\0') return s;
  if (const char* x = std::getenv("XDG_STATE_HOME"); x != nullptr && *x == '/') {
    return std::string(x) + "/belay/belayd.sock";
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h == '/') {
    return std::string(h) + "/.local/state/belay/belayd.sock";
  }
  return "/var/lib/belay/belayd.sock";
}

std::unique_ptr<v1::Coordinator::Stub> Connect(const std::string& socket_path) {
  return v1::Coordinator::NewStub(
      grpc::CreateChannel("unix:" + socket_path, grpc::InsecureChannelCredentials()));
}

std::unique_ptr<grpc::ClientContext> CallContext(int deadline_s) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (deadline_s > 0)
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(deadline_s));
  return ctx;
}

int ReportError(const grpc::Status& s, const std::string& what, const std::string& socket_path) {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      std::cerr << "belay: cannot reach belayd at " << socket_path << " (" << s.error_message()
                << "); is it running? Start it with `belayd`, or point --socket / BELAY_SOCKET at "
                   "its socket\n";
      return kExitUnavailable;
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::PERMISSION_DENIED:
      std::cerr << "belay: " << what << ": " << s.error_message() << "\n";
      return kExitNotFound;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
      std::cerr << "belay: " << what << ": " << s.error_message() << "\n";
      return kExitInvalid;
    default:
      std::cerr << "belay: " << what << ": " << s.error_message() << "\n";
      return kExitFailure;
  }
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) return "{}";
  return out;
}

}  // namespace belay::cli
