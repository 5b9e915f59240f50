// Scratch files and failure reports for the harnesses.
#include "fuzz/fuzz_support.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace belay::fuzz {

const std::filesystem::path& ScratchDir() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "belay-fuzz-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::fprintf(stderr, "fuzz: cannot create a scratch directory %s: %s\n", tmpl.c_str(),
                   std::strerror(errno));
      std::abort();
    }
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

void WriteFile(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  size_t done = 0;
  while (fd >= 0 && done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  if (fd < 0 || done != bytes.size() || ::close(fd) != 0) {
    std::fprintf(stderr, "fuzz: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
    std::abort();
  }
}

void Violated(std::string_view what) {
  std::fprintf(stderr, "fuzz: promise broken: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

}  // namespace belay::fuzz
