// The servers link_bench measures, each run in a process of its own: belayd's worker link over
// its supervisor and RocksDB store with a real attempt of N ranks, and an empty gRPC server.
#pragma once

#include <cstdint>
#include <filesystem>

namespace belay::bench {

// belayd's store (RocksDB in <dir>/state/store), supervisor (its rounds every second) and
// worker link on TLS (belayd's own CA in <dir>/state/tls) with one campaign whose attempt has
// `ranks` ranks, as belayd runs them; the attempt's job goes to a fake scheduler that keeps
// it running (nothing else could start 100,000 ranks here). Writes <dir>/address and
// <dir>/token (the attempt's), then serves until SIGTERM.
int ServeBelayd(const std::filesystem::path& dir, int32_t ranks);

// The worker link with handlers that do nothing but answer, on the same TLS certificate and
// with the same heartbeat interval: the floor of the transport. Writes <dir>/baseline_address.
int ServeBaseline(const std::filesystem::path& dir, int32_t ranks);

}  // namespace belay::bench
