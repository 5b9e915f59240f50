// ShardReader: checksum first, then a parse that bounds-checks every value against the file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "common/checksum.h"
#include "common/strings.h"
#include "worker/ckpt/shard_file.h"
#include "worker/ckpt/shard_format.h"
#include "xxhash.h"

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;

// pread(2) until `size` bytes are read; DataLoss if the file ends first.
absl::Status PreadAll(int fd, void* buf, size_t size, uint64_t offset, const fs::path& path) {
  char* p = static_cast<char*>(buf);
  while (size > 0) {
    ssize_t n = ::pread(fd, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, path, "read failed");
    if (n == 0) {
      return absl::DataLossError(Cat(path.string(), ": file ended early at byte ", offset));
    }
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ShardReader> ShardReader::Open(const fs::path& path) {
  const std::string where = path.string();
  auto loss = [&where](auto&&... parts) { return absl::DataLossError(Cat(where, ": ", parts...)); };

  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, path, "cannot open");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(Cat(where, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kMinFileSize) {
    return loss("truncated (", size, " bytes, expected at least ", kMinFileSize, ")");
  }

  // Only the fixed parts that every format version shares are looked at before the checksum:
  // the magics, the length (for a clear truncation message) and the footer's sum.
  char header[kHeaderSize];
  char footer[kFooterSize];
  if (absl::Status s = PreadAll(fd.get(), header, sizeof header, 0, path); !s.ok()) return s;
  if (absl::Status s = PreadAll(fd.get(), footer, sizeof footer, size - kFooterSize, path);
      !s.ok()) {
    return s;
  }
  if (std::memcmp(header, kHeaderMagic, sizeof kHeaderMagic) != 0) {
    return loss("bad magic (not a belay checkpoint shard)");
  }
  const uint64_t declared_size = Get<uint64_t>(header + kOffFileSize);
  if (std::memcmp(footer + 8, kFooterMagic, sizeof kFooterMagic) != 0) {
    if (size < declared_size) {
      return loss("truncated (", size, " bytes, expected at least ", declared_size, ")");
    }
    return loss("bad magic in footer");
  }
  const uint64_t body_end = size - kFooterSize;
  {
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                   &XXH3_freeState);
    if (state == nullptr) return absl::ResourceExhaustedError("cannot allocate an xxh3 state");
    XXH3_64bits_reset(state.get());
    std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(body_end, uint64_t{1} << 20)));
    for (uint64_t pos = 0; pos < body_end;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), body_end - pos));
      if (absl::Status s = PreadAll(fd.get(), buf.data(), n, pos, path); !s.ok()) return s;
      XXH3_64bits_update(state.get(), buf.data(), n);
      pos += n;
    }
    const uint64_t stored = Get<uint64_t>(footer);
    const uint64_t computed = XXH3_64bits_digest(state.get());
    if (stored != computed) {
      return loss("checksum mismatch: stored ", FormatXxh3(stored), ", computed ",
                  FormatXxh3(computed));
    }
  }

  // From here on the bytes are what the writer wrote; the checks below guard against a
  // writer bug or a file crafted to pass the checksum, so that no value read can send a
  // read or an allocation past the file.
  const uint32_t version = Get<uint32_t>(header + kOffVersion);
  if (version != kVersion) {
    return loss("unsupported format version ", version, " (this build reads ", kVersion, ")");
  }
  if (declared_size != size) {
    return loss("file is ", size, " bytes but its header says ", declared_size);
  }
  if (Get<uint32_t>(header + kOffHeaderSize) != kHeaderSize ||
      Get<uint32_t>(header + kOffReserved) != 0) {
    return loss("header: bad header size or reserved field");
  }
  const uint64_t metadata_offset = Get<uint64_t>(header + kOffMetadataOffset);
  const uint64_t metadata_size = Get<uint64_t>(header + kOffMetadataSize);
  const uint64_t index_offset = Get<uint64_t>(header + kOffIndexOffset);
  const uint64_t index_size = Get<uint64_t>(header + kOffIndexSize);
  const uint32_t entry_count = Get<uint32_t>(header + kOffEntryCount);
  uint64_t metadata_end, index_end;
  if (metadata_offset < kHeaderSize || !CheckedAdd(metadata_offset, metadata_size, &metadata_end) ||
      metadata_end > index_offset || !CheckedAdd(index_offset, index_size, &index_end) ||
      index_end > body_end) {
    return loss("header: metadata [", metadata_offset, ", +", metadata_size, ") or index [",
                index_offset, ", +", index_size, ") outside the file's ", body_end,
                " bytes before the footer");
  }
  if (entry_count > index_size / (kIndexEntryFixedSize + 1)) {
    return loss("index: ", entry_count, " entries cannot fit in ", index_size, " bytes");
  }

  ShardReader reader;
  reader.metadata_.resize(static_cast<size_t>(metadata_size));
  if (absl::Status s = PreadAll(fd.get(), reader.metadata_.data(), reader.metadata_.size(),
                                metadata_offset, path);
      !s.ok()) {
    return s;
  }
  std::string index(static_cast<size_t>(index_size), '\0');
  if (absl::Status s = PreadAll(fd.get(), index.data(), index.size(), index_offset, path);
      !s.ok()) {
    return s;
  }

  std::vector<ShardEntry>& entries = reader.entries_;
  entries.reserve(entry_count);
  uint64_t pos = 0;
  for (uint32_t i = 0; i < entry_count; ++i) {
    if (index_size - pos < kIndexEntryFixedSize) {
      return loss("index: entry ", i, " runs past the index");
    }
    const char* p = index.data() + pos;
    const uint32_t name_size = Get<uint32_t>(p);
    ShardEntry e;
    e.dtype = static_cast<DType>(Get<uint32_t>(p + 4));
    e.offset = Get<uint64_t>(p + 8);
    e.count = Get<uint64_t>(p + 16);
    e.total = Get<uint64_t>(p + 24);
    e.data_offset = Get<uint64_t>(p + 32);
    pos += kIndexEntryFixedSize;
    if (name_size == 0 || name_size > kMaxTensorNameBytes || name_size > index_size - pos) {
      return loss("index: entry ", i, " has a name of ", name_size, " bytes");
    }
    e.name.assign(index.data() + pos, name_size);
    pos += name_size;
    const size_t esize = DTypeSize(e.dtype);
    uint64_t bytes, data_end, elem_end;
    if (esize == 0) {
      return loss("index: tensor \"", e.name, "\" has unknown ", DTypeName(e.dtype));
    }
    if (!CheckedAdd(e.offset, e.count, &elem_end) || elem_end > e.total) {
      return loss("index: tensor \"", e.name, "\" elements [", e.offset, ", +", e.count,
                  ") end past its total ", e.total);
    }
    if (!CheckedMul(e.count, esize, &bytes) || !CheckedAdd(e.data_offset, bytes, &data_end) ||
        e.data_offset < index_end || data_end > body_end) {
      return loss("index: tensor \"", e.name, "\" data [", e.data_offset, ", +", e.count, " x ",
                  esize, " bytes) outside the data region [", index_end, ", ", body_end, ")");
    }
    entries.push_back(std::move(e));
  }
  if (pos != index_size) return loss("index: ", index_size - pos, " unused bytes at its end");

  std::sort(entries.begin(), entries.end(), [](const ShardEntry& a, const ShardEntry& b) {
    return a.name != b.name ? a.name < b.name : a.offset < b.offset;
  });
  // Sorted by offset, so a range overlaps an earlier one of its tensor only if it overlaps the
  // last one that is not empty (an empty range overlaps nothing and may sit between two that
  // do overlap).
  const ShardEntry* last_filled = nullptr;
  for (size_t i = 0; i < entries.size(); ++i) {
    const ShardEntry& e = entries[i];
    if (i == 0 || entries[i - 1].name != e.name) {
      last_filled = e.count > 0 ? &e : nullptr;
      continue;
    }
    std::vector<const ShardEntry*> earlier = {&entries[i - 1]};
    if (last_filled != nullptr && last_filled != &entries[i - 1]) earlier.push_back(last_filled);
    if (std::string why = CheckAgainstSiblings(e, earlier); !why.empty()) {
      return loss("index: ", why);
    }
    if (e.count > 0) last_filled = &e;
  }

  reader.path_ = path;
  reader.fd_ = std::move(fd);
  reader.file_size_ = size;
  reader.format_version_ = version;
  return reader;
}

absl::Status ShardReader::Read(std::string_view name, uint64_t offset, std::span<float> out) const {
  return ReadBytes(name, DType::kF32, offset, std::as_writable_bytes(out));
}

absl::Status ShardReader::Read(std::string_view name, uint64_t offset,
                               std::span<int64_t> out) const {
  return ReadBytes(name, DType::kI64, offset, std::as_writable_bytes(out));
}

absl::Status ShardReader::Read(std::string_view name, uint64_t offset,
                               std::span<uint8_t> out) const {
  return ReadBytes(name, DType::kU8, offset, std::as_writable_bytes(out));
}

absl::Status ShardReader::ReadBytes(std::string_view name, DType dtype, uint64_t offset,
                                    std::span<std::byte> out) const {
  const std::string where = path_.string();
  auto first = std::partition_point(entries_.begin(), entries_.end(),
                                    [name](const ShardEntry& e) { return e.name < name; });
  auto last = std::partition_point(first, entries_.end(),
                                   [name](const ShardEntry& e) { return e.name == name; });
  if (first == last) {
    return absl::NotFoundError(Cat(where, ": no tensor \"", name, "\""));
  }
  const size_t esize = DTypeSize(dtype);
  if (first->dtype != dtype || esize == 0 || out.size() % esize != 0) {
    return absl::InvalidArgumentError(Cat(where, ": tensor \"", name, "\" is ",
                                          DTypeName(first->dtype), ", read as ", DTypeName(dtype),
                                          " (", out.size(), " bytes)"));
  }
  const uint64_t n = out.size() / esize;
  uint64_t end;
  if (!CheckedAdd(offset, n, &end) || end > first->total) {
    return absl::OutOfRangeError(Cat(where, ": tensor \"", name, "\": elements [", offset, ", +", n,
                                     ") end past its total ", first->total));
  }

  // Plan the copies first so that a gap is reported before anything is read.
  struct Piece {
    uint64_t file_offset;
    size_t out_offset;
    size_t bytes;
  };
  std::vector<Piece> pieces;
  uint64_t cursor = offset;
  for (auto it = first; it != last && cursor < end; ++it) {
    const uint64_t e_end = it->offset + it->count;
    if (e_end <= cursor) continue;
    if (it->offset > cursor) break;
    const uint64_t take = std::min(end, e_end) - cursor;
    pieces.push_back({it->data_offset + (cursor - it->offset) * esize,
                      static_cast<size_t>((cursor - offset) * esize),
                      static_cast<size_t>(take * esize)});
    cursor += take;
  }
  if (cursor < end) {
    return absl::OutOfRangeError(Cat(where, ": tensor \"", name, "\": elements [", cursor, ", ",
                                     end, ") are not in this shard"));
  }
  for (const Piece& piece : pieces) {
    if (absl::Status s = PreadAll(fd_.get(), out.data() + piece.out_offset, piece.bytes,
                                  piece.file_offset, path_);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace belay::ckpt
