// Who is on the other end of each coordinator connection. belayd accepts Unix-socket
// connections itself, reads the peer's credentials (SO_PEERCRED) and hands the socket to gRPC;
// gRPC names such a connection "fd:<n>" in ServerContext::peer(), which is how a handler finds
// its caller here.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace belay::rpc {

struct PeerCredentials {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

class PeerRegistry {
 public:
  // Records the credentials of the connection on `fd` (replacing a closed one's).
  void Set(int fd, PeerCredentials creds);
  // The credentials for a gRPC peer string "fd:<n>"; nullopt for any other peer (TCP).
  std::optional<PeerCredentials> Lookup(const std::string& grpc_peer) const;

 private:
  mutable Mutex mu_;
  std::map<int, PeerCredentials> by_fd_ ABSL_GUARDED_BY(mu_);
};

}  // namespace belay::rpc
