// TLS for the worker link: belayd's certificate and the CA the ranks verify it against. By
// default belayd is its own CA: on first start it makes a CA and a server certificate in
// <state-dir>/tls/ and hands each attempt's ranks the CA certificate with their job; an
// operator can give a certificate and key of the site's instead.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace belay::rpc {

// The name belayd's own server certificate is issued to (its only subjectAltName). Ranks
// verify the server against it whatever address they dial (an IP, a node name), since
// belayd cannot know every name its host is reached by.
inline constexpr const char* kLinkServerName = "belayd";

struct LinkTls {
  std::string ca_pem;    // what the ranks trust (PEM)
  std::string cert_pem;  // belayd's certificate (chain), PEM
  std::string key_pem;   // its private key, PEM
  // The name ranks check the certificate for; empty: the host of the address they dial.
  std::string server_name;
};

// <dir>/ca.pem, ca.key, server.pem, server.key: read, or made when absent (EC P-256 keys,
// SHA-256 signatures, ten years; keys mode 0600; the directory 0700). Refused
// (FailedPrecondition, naming the file): a key that is not a regular file of belayd's user
// or that others may read, a partial set.
absl::StatusOr<LinkTls> LoadOrCreateLinkTls(const std::filesystem::path& dir);

// A certificate and key given by the operator (--tls-cert, --tls-key), and the CA the ranks
// are to trust (--tls-ca; empty: the certificate file itself, as for a self-signed one). The
// ranks check the certificate for the host of the address they dial.
absl::StatusOr<LinkTls> LoadGivenLinkTls(const std::filesystem::path& cert,
                                         const std::filesystem::path& key,
                                         const std::filesystem::path& ca);

}  // namespace belay::rpc
