// AttemptTokens: HMAC-SHA-256 through OpenSSL; see attempt_tokens.h.
#include "daemon/supervisor/attempt_tokens.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "common/strings.h"
#include "openssl/crypto.h"
#include "openssl/evp.h"
#include "openssl/hmac.h"
#include "openssl/rand.h"

namespace belay::supervisor {
namespace {

// A broken invariant: no random bytes, no HMAC. belayd cannot hand out tokens without them.
void Require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "belayd: %s\n", what);
  std::abort();
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  Require(RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) == 1,
          "OpenSSL gave no random bytes");
  return out;
}

absl::Status ReadAll(int fd, std::string& out, const std::filesystem::path& file) {
  char buf[256];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(Cat(file.string(), ": ", std::strerror(errno)));
    if (n == 0) return absl::OkStatus();
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > 4096) return absl::OkStatus();
  }
}

}  // namespace

AttemptTokens::AttemptTokens(std::string key) : key_(std::move(key)) {
  Require(key_.size() == kKeyBytes, "an attempt token key has 32 bytes");
}

std::string AttemptTokens::RandomKey() { return RandomBytes(kKeyBytes); }

std::string AttemptTokens::NewNonce() { return absl::BytesToHexString(RandomBytes(16)); }

absl::StatusOr<std::string> AttemptTokens::LoadOrCreateKey(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    const std::string key = RandomBytes(kKeyBytes);
    const std::filesystem::path tmp = file.string() + ".new";
    ::unlink(tmp.c_str());
    const int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0)
      return absl::InternalError(Cat(tmp.string(), ": cannot create: ", std::strerror(errno)));
    const bool written = ::write(out, key.data(), key.size()) == static_cast<ssize_t>(key.size()) &&
                         ::fsync(out) == 0;
    ::close(out);
    // link() fails if another belayd created the key meanwhile: then that one is read below.
    if (!written || (::link(tmp.c_str(), file.c_str()) != 0 && errno != EEXIST)) {
      const int e = errno;
      ::unlink(tmp.c_str());
      return absl::InternalError(
          Cat(file.string(), ": cannot write the token key: ", std::strerror(e)));
    }
    ::unlink(tmp.c_str());
    fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  }
  if (fd < 0)
    return absl::FailedPreconditionError(
        Cat(file.string(), ": cannot open the token key: ", std::strerror(errno)));
  struct stat st {};
  std::string key;
  absl::Status read = ::fstat(fd, &st) == 0
                          ? ReadAll(fd, key, file)
                          : absl::InternalError(Cat(file.string(), ": ", std::strerror(errno)));
  ::close(fd);
  if (!read.ok()) return read;
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(
        Cat(file.string(), ": the worker token key must be a regular file of uid ", ::geteuid(),
            " that no one else may read or write (it is mode ",
            absl::StrFormat("%04o", st.st_mode & 07777), ", uid ", st.st_uid,
            "); remove it and restart belayd to make a new one"));
  }
  if (key.size() != kKeyBytes) {
    return absl::FailedPreconditionError(Cat(file.string(), ": the worker token key has ",
                                             key.size(), " bytes, not ", kKeyBytes,
                                             "; remove it and restart belayd to make a new one"));
  }
  return key;
}

std::string AttemptTokens::Mac(std::string_view domain, std::string_view message) const {
  std::string input;
  input.reserve(domain.size() + 1 + message.size());
  input.append(domain);
  input.push_back('\0');
  input.append(message);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  Require(HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
               reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac,
               &len) != nullptr,
          "HMAC-SHA-256 failed");
  return std::string(reinterpret_cast<const char*>(mac), len);
}

std::string AttemptTokens::Token(std::string_view campaign, int32_t attempt,
                                 std::string_view nonce) const {
  // Length-prefixed fields: no two (campaign, attempt, nonce) give the same message.
  return absl::BytesToHexString(
      Mac("belay attempt token v1", Cat(campaign.size(), ":", campaign, ":", attempt, ":", nonce)));
}

std::string AttemptTokens::Digest(std::string_view token) const {
  return Mac("belay token lookup v1", token);
}

bool DigestEqual::operator()(const std::string& a, const std::string& b) const {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

size_t DigestHash::operator()(const std::string& d) const {
  size_t h = 0;
  std::memcpy(&h, d.data(), std::min(sizeof h, d.size()));
  return h;
}

}  // namespace belay::supervisor
