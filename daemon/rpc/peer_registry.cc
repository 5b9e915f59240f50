// PeerRegistry: credentials by file descriptor.
#include "daemon/rpc/peer_registry.h"

#include <charconv>

namespace belay::rpc {

void PeerRegistry::Set(int fd, PeerCredentials creds) {
  MutexLock lock(&mu_);
  by_fd_[fd] = creds;
}

std::optional<PeerCredentials> PeerRegistry::Lookup(const std::string& peer) const {
  constexpr std::string_view kPrefix = "fd:";
  if (!peer.starts_with(kPrefix)) return std::nullopt;
  int fd = -1;
  const char* begin = peer.data() + kPrefix.size();
  auto [end, ec] = std::from_chars(begin, peer.data() + peer.size(), fd);
  if (ec != std::errc() || end != peer.data() + peer.size()) return std::nullopt;
  MutexLock lock(&mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return std::nullopt;
  return it->second;
}

}  // namespace belay::rpc
