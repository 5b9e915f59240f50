// WorkerLinkService's handlers called directly with mutated requests: the input is a
// serialized WorkerLinkSession (service_sessions.proto), a sequence of worker-link requests
// interleaved with scheduler and clock events, run against a fresh belayd (daemon_world.h)
// whose campaign has an attempt running. Nothing a worker sends may crash belayd.
#include <cstddef>
#include <cstdint>

#include "daemon/rpc/worker_link_service.h"
#include "fuzz/daemon_world.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/service_sessions.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  belay::fuzz::WorkerLinkSession session;
  if (!belay::fuzz::ParseSession(data, size, &session)) return -1;
  belay::fuzz::DaemonWorld world(belay::fuzz::ScratchDir() / "world");
  // Rendezvous answers at once instead of waiting for ranks that are not coming.
  belay::rpc::WorkerLinkService link(world.supervisor(), absl::ZeroDuration());
  for (const belay::fuzz::WorkerLinkCall& call : session.calls()) world.Run(link, call);
  return 0;
}
