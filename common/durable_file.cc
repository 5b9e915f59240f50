// AtomicFile: temporary file, fsync, rename, directory fsync.
#include "common/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/strings.h"

namespace belay {
namespace {

namespace fs = std::filesystem;

constexpr size_t kBufferSize = size_t{1} << 20;

std::string RandomHex() {
  std::random_device rd;
  uint64_t v = (uint64_t{rd()} << 32) ^ uint64_t { rd() };
  return absl::StrFormat("%016x", v);
}

// write(2) until done, retrying short writes and EINTR.
absl::Status WriteAll(int fd, const std::byte* data, size_t size, const fs::path& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, path, "write failed");
    if (n == 0) return ErrnoError(EIO, path, "write made no progress");
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// pwrite(2) until done, retrying short writes and EINTR.
absl::Status PwriteAll(int fd, const std::byte* data, size_t size, uint64_t offset,
                       const fs::path& path) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, path, "write failed");
    if (n == 0) return ErrnoError(EIO, path, "write made no progress");
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

ScopedFd& ScopedFd::operator=(ScopedFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status ErrnoError(int err, const fs::path& path, std::string_view what) {
  return absl::ErrnoToStatus(err, Cat(path.string(), ": ", what));
}

absl::Status SyncDirectory(const fs::path& dir) {
  const fs::path& target = dir.empty() ? fs::path(".") : dir;
  int fd = ::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, target, "cannot open directory to sync it");
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError(err, target, "fsync of directory failed");
  return absl::OkStatus();
}

absl::StatusOr<AtomicFile> AtomicFile::Create(const fs::path& final_path,
                                              const AtomicFileOptions& options) {
  if (final_path.filename().empty()) {
    return absl::InvalidArgumentError(Cat(final_path.string(), ": not a file name"));
  }
  fs::path temp_path =
      final_path.parent_path() / Cat(options.hidden_temp_name ? "." : "",
                                     final_path.filename().string(), ".", RandomHex(), kTempSuffix);
  int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                  static_cast<mode_t>(options.mode));
  if (fd < 0) return ErrnoError(errno, temp_path, "cannot create");
  return AtomicFile(final_path, std::move(temp_path), fd);
}

AtomicFile::AtomicFile(fs::path final_path, fs::path temp_path, int fd)
    : final_path_(std::move(final_path)), temp_path_(std::move(temp_path)), fd_(fd) {
  buffer_.reserve(kBufferSize);
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : final_path_(std::move(other.final_path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      committed_(std::exchange(other.committed_, true)),
      error_(std::move(other.error_)),
      buffer_(std::move(other.buffer_)),
      bytes_appended_(other.bytes_appended_) {}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    Abandon();
    final_path_ = std::move(other.final_path_);
    temp_path_ = std::move(other.temp_path_);
    fd_ = std::exchange(other.fd_, -1);
    committed_ = std::exchange(other.committed_, true);
    error_ = std::move(other.error_);
    buffer_ = std::move(other.buffer_);
    bytes_appended_ = other.bytes_appended_;
  }
  return *this;
}

AtomicFile::~AtomicFile() { Abandon(); }

void AtomicFile::Abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!committed_ && !temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    committed_ = true;  // Nothing left to clean up.
  }
}

absl::Status AtomicFile::CheckOpen() const {
  if (!error_.ok()) return error_;
  if (fd_ < 0) return absl::FailedPreconditionError(Cat(temp_path_.string(), ": already closed"));
  return absl::OkStatus();
}

absl::Status AtomicFile::Fail(absl::Status status) {
  if (error_.ok()) error_ = std::move(status);
  Abandon();
  return error_;
}

absl::Status AtomicFile::Append(std::span<const std::byte> data) {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  bytes_appended_ += data.size();
  if (buffer_.size() + data.size() <= kBufferSize) {
    buffer_.insert(buffer_.end(), data.begin(), data.end());
    return absl::OkStatus();
  }
  if (absl::Status s = Flush(); !s.ok()) return s;
  if (data.size() >= kBufferSize) {
    // Large tensors go straight to the kernel instead of through the buffer.
    if (absl::Status s = WriteAll(fd_, data.data(), data.size(), temp_path_); !s.ok()) {
      return Fail(std::move(s));
    }
    return absl::OkStatus();
  }
  buffer_.insert(buffer_.end(), data.begin(), data.end());
  return absl::OkStatus();
}

absl::Status AtomicFile::Append(std::string_view data) {
  return Append(std::as_bytes(std::span<const char>(data.data(), data.size())));
}

absl::Status AtomicFile::WriteAt(uint64_t offset, std::span<const std::byte> data) {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  if (offset > bytes_appended_ || data.size() > bytes_appended_ - offset) {
    return Fail(absl::OutOfRangeError(Cat(temp_path_.string(), ": cannot overwrite ", data.size(),
                                          " bytes at offset ", offset, ": only ", bytes_appended_,
                                          " bytes have been appended")));
  }
  // Bytes below `on_disk` have been written to the file; the rest are still in the buffer.
  const uint64_t on_disk = bytes_appended_ - buffer_.size();
  const size_t in_file =
      offset >= on_disk ? 0
                        : static_cast<size_t>(std::min<uint64_t>(data.size(), on_disk - offset));
  if (in_file > 0) {
    if (absl::Status s = PwriteAll(fd_, data.data(), in_file, offset, temp_path_); !s.ok()) {
      return Fail(std::move(s));
    }
  }
  if (in_file < data.size()) {
    std::copy(data.begin() + static_cast<std::ptrdiff_t>(in_file), data.end(),
              buffer_.begin() + static_cast<std::ptrdiff_t>(offset + in_file - on_disk));
  }
  return absl::OkStatus();
}

absl::Status AtomicFile::Flush() {
  if (buffer_.empty()) return absl::OkStatus();
  absl::Status s = WriteAll(fd_, buffer_.data(), buffer_.size(), temp_path_);
  buffer_.clear();
  if (!s.ok()) return Fail(std::move(s));
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit() {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  if (absl::Status s = Flush(); !s.ok()) return s;
  if (::fsync(fd_) != 0) return Fail(ErrnoError(errno, temp_path_, "fsync failed"));
  int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) return Fail(ErrnoError(errno, temp_path_, "close failed"));
  if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    return Fail(ErrnoError(errno, temp_path_, Cat("cannot rename to ", final_path_.string())));
  }
  committed_ = true;
  if (absl::Status s = SyncDirectory(final_path_.parent_path()); !s.ok()) {
    error_ = s;
    return s;
  }
  return absl::OkStatus();
}

}  // namespace belay
