// xxh3-64 over memory and files, with libxxhash's streaming state for files.
#include "common/checksum.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/strings.h"
#include "xxhash.h"

namespace belay {

uint64_t Xxh3(std::span<const std::byte> data) { return XXH3_64bits(data.data(), data.size()); }

uint64_t Xxh3(std::string_view data) { return XXH3_64bits(data.data(), data.size()); }

absl::StatusOr<uint64_t> Xxh3File(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string msg = Cat(path.string(), ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  XXH3_64bits_reset(state.get());
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return absl::DataLossError(Cat(path.string(), ": read failed: ", std::strerror(err)));
    }
    if (n == 0) break;
    XXH3_64bits_update(state.get(), buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return XXH3_64bits_digest(state.get());
}

std::string FormatXxh3(uint64_t sum) { return absl::StrFormat("%016x", sum); }

absl::StatusOr<uint64_t> ParseXxh3(std::string_view hex) {
  if (hex.size() != 16) {
    return absl::InvalidArgumentError(Cat("checksum \"", hex, "\" is not 16 hex digits"));
  }
  uint64_t v = 0;
  for (char c : hex) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return absl::InvalidArgumentError(Cat("checksum \"", hex, "\" is not 16 hex digits"));
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

}  // namespace belay
