// One checkpoint shard file (one per rank per step): caller-provided JSON metadata plus
// element ranges of logical tensors, checksummed as a whole. Byte layout: docs/checkpoints.md.
//
// Tensors are stored by logical name and element offset, never by rank-local position, so a
// checkpoint written by W ranks can be read back by W' ranks: each reader asks for the element
// range it owns and gets it from whichever entries cover it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/durable_file.h"

namespace belay::ckpt {

// Element types. The numeric values are stored in files: never renumber.
enum class DType : uint32_t {
  kF32 = 1,  // IEEE-754 binary32
  kI64 = 2,  // two's-complement int64
  kU8 = 3,   // bytes (opaque state such as serialized RNG or loader positions)
};

// Bytes per element; 0 for a value that is not a DType.
size_t DTypeSize(DType dtype);
// "f32", "i64", "u8"; "dtype(<n>)" for a value that is not a DType.
std::string DTypeName(DType dtype);

// Longest tensor name a shard stores, in bytes.
inline constexpr size_t kMaxTensorNameBytes = 4096;

// One stored element range of a logical tensor.
struct ShardEntry {
  std::string name;  // logical tensor name, e.g. "h.3.attn.qkv.w" or "adam.m"
  DType dtype = DType::kF32;
  uint64_t offset = 0;       // first stored element within the logical tensor
  uint64_t count = 0;        // elements stored
  uint64_t total = 0;        // elements in the whole logical tensor
  uint64_t data_offset = 0;  // where the data starts in the file (reader side only)
};

// What a written shard file is: what ranks report and manifests record.
struct ShardFileInfo {
  std::filesystem::path path;
  uint64_t bytes = 0;  // file size
  uint64_t xxh3 = 0;   // xxh3-64 of the whole file, as Xxh3File computes it
};

// Collects entries and metadata, then writes them as one shard file.
//
// The writer does not copy tensor data: every span passed to Add must stay valid and
// unchanged until the last Write returns (an async saver hands it the host copy it owns).
// Not thread-safe.
class ShardWriter {
 public:
  // Stores elements [offset, offset + data.size()) of the logical tensor `name`, which has
  // `total` elements. Several ranges of one tensor may be added; they must not overlap and
  // must agree on dtype and total. An empty range is allowed (it records the tensor and its
  // total). Errors: InvalidArgument for an empty or over-long name, a dtype or total that
  // contradicts an earlier range, or overlapping ranges; OutOfRange when the range ends past
  // `total`. A failed Add stores nothing.
  absl::Status Add(std::string name, uint64_t offset, uint64_t total, std::span<const float> data);
  absl::Status Add(std::string name, uint64_t offset, uint64_t total,
                   std::span<const int64_t> data);
  absl::Status Add(std::string name, uint64_t offset, uint64_t total,
                   std::span<const uint8_t> data);
  // Generic form: `data` holds data.size() / DTypeSize(dtype) little-endian elements
  // (InvalidArgument if that does not divide, or for an unknown dtype).
  absl::Status AddBytes(std::string name, DType dtype, uint64_t offset, uint64_t total,
                        std::span<const std::byte> data);

  // Free-form UTF-8 JSON (step, RNG, loader state, world size, ...); stored verbatim, not
  // parsed. Empty unless set.
  void SetMetadata(std::string json) { metadata_ = std::move(json); }

  // Writes the shard atomically (AtomicFile: temporary name in the same directory, fsync,
  // rename, directory fsync); the parent directory must exist. Errors name the file. A failed
  // Write leaves what was under `final_path` before and no temporary file, except when only the
  // closing directory fsync failed: the new file is then in place but may not survive a crash.
  // May be called more than once.
  absl::StatusOr<ShardFileInfo> Write(const std::filesystem::path& final_path) const;

 private:
  struct Pending {
    ShardEntry entry;
    std::span<const std::byte> data;
  };
  std::vector<Pending> pending_;  // in Add order, which is file order
  std::string metadata_;
};

// A verified shard file, open for reading.
//
// Open checks the whole file before trusting any of it, so a reader that exists holds a file
// whose every byte matched its checksum when opened. It keeps the file open; Read is const
// and safe to call from several threads at once. Movable, not copyable.
class ShardReader {
 public:
  // Reads `path` and verifies, in order: length, header magic, footer magic, xxh3 of every
  // byte before the footer, format version; then parses the index, bounds-checking every
  // length and offset against the file size. Every failure of those is DataLoss naming the
  // path ("truncated (N bytes, expected at least M)", "bad magic", "checksum mismatch: stored
  // X, computed Y", "unsupported format version V", "index: ..."); NotFound if there is no
  // file. Never crashes on or allocates more than the file's size for any file content.
  static absl::StatusOr<ShardReader> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  uint32_t format_version() const { return format_version_; }
  const std::string& metadata() const { return metadata_; }
  // All entries, sorted by name, then offset.
  const std::vector<ShardEntry>& entries() const { return entries_; }

  // Copies elements [offset, offset + out.size()) of logical tensor `name` into `out`,
  // assembling them from as many entries as the range spans. Errors, each naming the file
  // and the tensor: NotFound when no entry has that name; InvalidArgument when the tensor's
  // dtype differs from out's; OutOfRange when the range ends past the tensor's total or part
  // of it is in no entry of this shard; DataLoss if the file no longer reads back. On error
  // `out` may be partly written.
  absl::Status Read(std::string_view name, uint64_t offset, std::span<float> out) const;
  absl::Status Read(std::string_view name, uint64_t offset, std::span<int64_t> out) const;
  absl::Status Read(std::string_view name, uint64_t offset, std::span<uint8_t> out) const;
  absl::Status ReadBytes(std::string_view name, DType dtype, uint64_t offset,
                         std::span<std::byte> out) const;

 private:
  ShardReader() = default;

  std::filesystem::path path_;
  ScopedFd fd_;
  uint64_t file_size_ = 0;
  uint32_t format_version_ = 0;
  std::string metadata_;
  std::vector<ShardEntry> entries_;
};

}  // namespace belay::ckpt
