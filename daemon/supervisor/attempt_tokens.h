// Attempt tokens: the secret each attempt's ranks present on the worker link. A token is
// derived from belayd's key and a per-attempt nonce, so the store keeps only the nonce (no
// token, no hash a reader could test guesses against) and a restarted belayd hands out the
// same token again (a retried submission finds the same job). belayd looks tokens up by a
// keyed hash, compared in constant time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace belay::supervisor {

class AttemptTokens {
 public:
  static constexpr size_t kKeyBytes = 32;

  // `key`: kKeyBytes secret bytes (a shorter or longer key is a programming error).
  explicit AttemptTokens(std::string key);

  // A key that lives as long as this process (tests; a belayd without a state directory).
  static std::string RandomKey();
  // The key in `file`, created (kKeyBytes random bytes, mode 0600, never through a symlink)
  // when absent. A file that is not a regular file of belayd's own user, is readable or
  // writable by anyone else, or has the wrong size is refused (FailedPrecondition, naming it):
  // belayd does not run on a key others may know.
  static absl::StatusOr<std::string> LoadOrCreateKey(const std::filesystem::path& file);

  // 16 random bytes, hex: a new attempt's nonce (what the store keeps).
  static std::string NewNonce();

  // The token of attempt `attempt` of campaign `campaign` with nonce `nonce`: 64 hex digits
  // of HMAC-SHA-256 over the three. Another campaign, attempt or nonce gives an unrelated
  // token; without the key, none can be computed.
  std::string Token(std::string_view campaign, int32_t attempt, std::string_view nonce) const;

  // The keyed hash belayd looks a presented token up by (32 bytes, not hex). Equal tokens
  // have equal digests; the digest of a guess tells nothing about a real token's.
  std::string Digest(std::string_view token) const;

 private:
  std::string Mac(std::string_view domain, std::string_view message) const;

  std::string key_;
};

// Equality of digests in constant time (CRYPTO_memcmp), for maps keyed by Digest.
struct DigestEqual {
  bool operator()(const std::string& a, const std::string& b) const;
};
// Hash of a digest (its first bytes: digests are uniformly distributed already).
struct DigestHash {
  size_t operator()(const std::string& d) const;
};

}  // namespace belay::supervisor
