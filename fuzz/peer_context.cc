// One coordinator call held open, for its ServerContext.
#include "fuzz/peer_context.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <memory>
#include <thread>

#include "belay/v1/coordinator.grpc.pb.h"
#include "common/mutex.h"
#include "fuzz/fuzz_support.h"
#include "grpcpp/create_channel_posix.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/server_posix.h"

namespace belay::fuzz {
namespace {

// Answers no call: GetDaemonInfo hands out its context and never returns.
class ContextCapture final : public v1::Coordinator::Service {
 public:
  grpc::Status GetDaemonInfo(grpc::ServerContext* ctx, const v1::GetDaemonInfoRequest*,
                             v1::GetDaemonInfoResponse*) override {
    MutexLock lock(&mu_);
    ctx_ = ctx;
    captured_.SignalAll();
    while (true) captured_.Wait(&mu_);  // the call stays open for the harness's lifetime
  }
  grpc::ServerContext* Wait() {
    MutexLock lock(&mu_);
    while (ctx_ == nullptr) captured_.Wait(&mu_);
    return ctx_;
  }

 private:
  Mutex mu_;
  CondVar captured_;
  grpc::ServerContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
};

PeerContext Start() {
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0,
             "socketpair");
  auto* capture = new ContextCapture;  // leaked on purpose, as is everything below
  grpc::ServerBuilder builder;
  builder.RegisterService(capture);
  grpc::Server* server = builder.BuildAndStart().release();
  FUZZ_CHECK(server != nullptr, "the gRPC server starts");
  grpc::AddInsecureChannelFromFd(server, sv[0]);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateInsecureChannelFromFd("belay-fuzz", sv[1]);
  std::thread([channel] {
    std::unique_ptr<v1::Coordinator::Stub> stub = v1::Coordinator::NewStub(channel);
    grpc::ClientContext cc;
    v1::GetDaemonInfoRequest req;
    v1::GetDaemonInfoResponse resp;
    (void)stub->GetDaemonInfo(&cc, req, &resp);
  }).detach();
  PeerContext p{capture->Wait(), sv[0]};
  FUZZ_CHECK(p.context->peer() == Cat("fd:", sv[0]),
             "the call's peer is its socket: ", p.context->peer());
  return p;
}

}  // namespace

const PeerContext& LivePeerContext() {
  static const PeerContext p = Start();
  return p;
}

}  // namespace belay::fuzz
