// CoordinatorService's handlers called directly with mutated requests: the input is a
// serialized CoordinatorSession (service_sessions.proto), a sequence of API requests from the
// campaign's owner, root, another user or an unknown peer, interleaved with worker-link
// reports that give the campaign steps, checkpoints and events. Each runs against a fresh
// belayd (daemon_world.h); callers are told apart as belayd tells them, by a PeerRegistry
// entry for a real gRPC connection's fd (peer_context.h). Nothing a user sends may crash
// belayd. WatchCampaign is not called: it streams until the campaign ends.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/isolated_spec_check.h"
#include "daemon/rpc/coordinator_service.h"
#include "daemon/rpc/peer_registry.h"
#include "daemon/rpc/worker_link_service.h"
#include "fuzz/daemon_world.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/peer_context.h"
#include "fuzz/service_sessions.pb.h"

namespace {

using belay::fuzz::CoordinatorCall;

// The context a call from `caller` arrives with: the live connection with the caller's
// credentials registered, or, for a caller belayd cannot identify, a default ServerContext
// (its peer is no "fd:<n>").
grpc::ServerContext* As(belay::fuzz::Caller caller, belay::rpc::PeerRegistry& peers) {
  static grpc::ServerContext unknown;
  const belay::fuzz::PeerContext& live = belay::fuzz::LivePeerContext();
  uint32_t uid = belay::fuzz::DaemonWorld::kOwnerUid;
  switch (caller) {
    case belay::fuzz::CALLER_ROOT:
      uid = 0;
      break;
    case belay::fuzz::CALLER_OTHER_USER:
      uid = belay::fuzz::DaemonWorld::kOwnerUid + 1;
      break;
    case belay::fuzz::CALLER_UNKNOWN:
      return &unknown;
    default:
      break;
  }
  peers.Set(live.fd, {.uid = uid, .gid = uid, .pid = 1});
  return live.context;
}

void Run(const CoordinatorCall& call, belay::fuzz::DaemonWorld& world,
         belay::rpc::CoordinatorService& api, belay::rpc::WorkerLinkService& link,
         belay::rpc::PeerRegistry& peers) {
  grpc::ServerContext* ctx = As(call.caller(), peers);
  auto fixed = [&]<typename Req>(Req req) {
    if (call.fix_ids()) {
      if constexpr (requires { req.set_campaign_id(""); }) req.set_campaign_id(world.campaign_id());
      if constexpr (requires { req.set_spec_dir(""); })
        req.set_spec_dir(world.state_dir().string());
    }
    return req;
  };
  using Api = belay::rpc::CoordinatorService;
  using belay::fuzz::Serve;
  switch (call.call_case()) {
    case CoordinatorCall::kSubmitCampaign:
      return Serve(api, ctx, fixed(call.submit_campaign()), &Api::SubmitCampaign);
    case CoordinatorCall::kListCampaigns:
      return Serve(api, ctx, fixed(call.list_campaigns()), &Api::ListCampaigns);
    case CoordinatorCall::kGetCampaign:
      return Serve(api, ctx, fixed(call.get_campaign()), &Api::GetCampaign);
    case CoordinatorCall::kCancelCampaign:
      return Serve(api, ctx, fixed(call.cancel_campaign()), &Api::CancelCampaign);
    case CoordinatorCall::kQueryMetrics:
      return Serve(api, ctx, fixed(call.query_metrics()), &Api::QueryMetrics);
    case CoordinatorCall::kListEvents:
      return Serve(api, ctx, fixed(call.list_events()), &Api::ListEvents);
    case CoordinatorCall::kListCheckpoints:
      return Serve(api, ctx, fixed(call.list_checkpoints()), &Api::ListCheckpoints);
    case CoordinatorCall::kListNodes:
      return Serve(api, ctx, fixed(call.list_nodes()), &Api::ListNodes);
    case CoordinatorCall::kGetLogs:
      return Serve(api, ctx, fixed(call.get_logs()), &Api::GetLogs);
    case CoordinatorCall::kGetDaemonInfo:
      return Serve(api, ctx, fixed(call.get_daemon_info()), &Api::GetDaemonInfo);
    case CoordinatorCall::kWorker:
      world.Run(link, call.worker());
      break;
    case CoordinatorCall::CALL_NOT_SET:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // SubmitCampaign parses the file in a child first: /proc/self/exe --check-spec, this
  // program, which then answers as belayd's main does.
  if (*argc == 2 && std::string_view((*argv)[1]) == belay::kSpecCheckFlag)
    std::exit(belay::RunSpecCheck());
  belay::fuzz::LivePeerContext();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  belay::fuzz::CoordinatorSession session;
  if (!belay::fuzz::ParseSession(data, size, &session)) return -1;
  belay::fuzz::DaemonWorld world(belay::fuzz::ScratchDir() / "world");
  belay::rpc::WorkerLinkService link(world.supervisor(), absl::ZeroDuration());
  belay::rpc::PeerRegistry peers;
  belay::rpc::DaemonFacts facts;
  facts.version = "belayd fuzz";
  facts.state_dir = world.state_dir();
  facts.worker_listen_address = "127.0.0.1:1";
  facts.start_time = world.clock().Now();
  belay::rpc::CoordinatorService api(world.supervisor(), world.store(), peers, world.clock(),
                                     facts);
  for (const CoordinatorCall& call : session.calls()) Run(call, world, api, link, peers);
  return 0;
}
