// Crash-safe file creation (checkpoints, token shards): a file appears under its final name
// complete and on disk, or not at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace belay {

// Suffix of every temporary name AtomicFile creates; the checkpoint layout gives its step
// directories the same suffix. A name ending in it is never a finished file, so crash cleanup
// (RemoveIncomplete, common/ckpt/layout.h) may delete such names.
inline constexpr std::string_view kTempSuffix = ".tmp";

// How AtomicFile::Create names and creates its temporary file.
struct AtomicFileOptions {
  // Starts the temporary name with a dot (`.<final name>.<hex>.tmp`), so that shell globs
  // such as `train_*` never match a file that is still being written or that a crash left.
  bool hidden_temp_name = false;
  // Permission bits of the new file, before the umask.
  uint32_t mode = 0644;
};

// Writes `final_path` atomically: bytes go to a fresh temporary file in the same directory
// (`<final name>.<16 random hex digits>.tmp`, so writers that overlap by mistake never share
// a temporary file; with a leading dot if options ask for it), and Commit() fsyncs it, renames
// it over `final_path` and fsyncs the directory. A file previously under `final_path` stays
// intact until the rename replaces it.
//
// Destroying an uncommitted AtomicFile closes and unlinks its temporary file; a process that
// dies instead leaves it behind for RemoveIncomplete. After any failed call the object is
// unusable: later calls return the same error. Not thread-safe; movable, not copyable.
class AtomicFile {
 public:
  // Creates the temporary file. The parent directory must exist (NotFound otherwise).
  static absl::StatusOr<AtomicFile> Create(const std::filesystem::path& final_path,
                                           const AtomicFileOptions& options = {});

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  // Appends bytes (buffered). Errors name the temporary file and carry errno's code
  // (ResourceExhausted for a full disk, for one).
  absl::Status Append(std::span<const std::byte> data);
  absl::Status Append(std::string_view data);

  // Overwrites bytes [offset, offset + data.size()) of what has been appended so far (a header
  // whose final contents are known only at the end, say), wherever those bytes are: in the
  // buffer or already in the file. The file does not grow. OutOfRange for a range that is not
  // inside the bytes appended.
  absl::Status WriteAt(uint64_t offset, std::span<const std::byte> data);

  // Flushes, fsyncs, closes, renames into place and fsyncs the directory. Once it has
  // returned OK the file survives a crash under its final name.
  absl::Status Commit();

  uint64_t bytes_appended() const { return bytes_appended_; }
  const std::filesystem::path& temp_path() const { return temp_path_; }

 private:
  AtomicFile(std::filesystem::path final_path, std::filesystem::path temp_path, int fd);
  absl::Status Flush();
  absl::Status CheckOpen() const;          // The sticky error; FailedPrecondition once closed.
  absl::Status Fail(absl::Status status);  // Keeps the first error; returns it.
  void Abandon();                          // Closes and unlinks the temporary file.

  std::filesystem::path final_path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  absl::Status error_;
  std::vector<std::byte> buffer_;
  uint64_t bytes_appended_ = 0;
};

// Owns a file descriptor: closes it on destruction. Movable, not copyable.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd();

  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// fsyncs a directory, so that renames and unlinks in it are durable.
absl::Status SyncDirectory(const std::filesystem::path& dir);

// Builds a status from errno: `<path>: <what>: <strerror>` with the code errno maps to.
absl::Status ErrnoError(int err, const std::filesystem::path& path, std::string_view what);

}  // namespace belay
