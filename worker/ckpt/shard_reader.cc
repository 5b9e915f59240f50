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

// The file's data is not what its writer wrote, or not what a writer writes.
template <typename... Parts>
absl::Status Loss(const std::string& where, const Parts&... parts) {
  return absl::DataLossError(Cat(where, ": ", parts...));
}

// XXH3 over the body (everything before the footer) against the sum the footer holds.
absl::Status VerifyChecksum(int fd, uint64_t body_end, const char* footer, const fs::path& path) {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  if (state == nullptr) return absl::ResourceExhaustedError("cannot allocate an xxh3 state");
  XXH3_64bits_reset(state.get());
  std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(body_end, uint64_t{1} << 20)));
  for (uint64_t pos = 0; pos < body_end;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), body_end - pos));
    if (absl::Status s = PreadAll(fd, buf.data(), n, pos, path); !s.ok()) return s;
    XXH3_64bits_update(state.get(), buf.data(), n);
    pos += n;
  }
  const uint64_t stored = Get<uint64_t>(footer);
  const uint64_t computed = XXH3_64bits_digest(state.get());
  if (stored != computed) {
    return Loss(path.string(), "checksum mismatch: stored ", FormatXxh3(stored), ", computed ",
                FormatXxh3(computed));
  }
  return absl::OkStatus();
}

// Where the header says the parts of a file of `size` bytes are, checked to lie inside it.
struct Layout {
  uint32_t version = 0;
  uint64_t metadata_offset = 0, metadata_size = 0;
  uint64_t index_offset = 0, index_size = 0, index_end = 0;
  uint32_t entry_count = 0;
};

absl::StatusOr<Layout> ParseHeader(const char* header, uint64_t size, const std::string& where) {
  const uint64_t body_end = size - kFooterSize;
  Layout l;
  l.version = Get<uint32_t>(header + kOffVersion);
  if (l.version != kVersion) {
    return Loss(where, "unsupported format version ", l.version, " (this build reads ", kVersion,
                ")");
  }
  const uint64_t declared_size = Get<uint64_t>(header + kOffFileSize);
  if (declared_size != size) {
    return Loss(where, "file is ", size, " bytes but its header says ", declared_size);
  }
  if (Get<uint32_t>(header + kOffHeaderSize) != kHeaderSize ||
      Get<uint32_t>(header + kOffReserved) != 0) {
    return Loss(where, "header: bad header size or reserved field");
  }
  l.metadata_offset = Get<uint64_t>(header + kOffMetadataOffset);
  l.metadata_size = Get<uint64_t>(header + kOffMetadataSize);
  l.index_offset = Get<uint64_t>(header + kOffIndexOffset);
  l.index_size = Get<uint64_t>(header + kOffIndexSize);
  l.entry_count = Get<uint32_t>(header + kOffEntryCount);
  uint64_t metadata_end;
  if (l.metadata_offset < kHeaderSize ||
      !CheckedAdd(l.metadata_offset, l.metadata_size, &metadata_end) ||
      metadata_end > l.index_offset || !CheckedAdd(l.index_offset, l.index_size, &l.index_end) ||
      l.index_end > body_end) {
    return Loss(where, "header: metadata [", l.metadata_offset, ", +", l.metadata_size,
                ") or index [", l.index_offset, ", +", l.index_size, ") outside the file's ",
                body_end, " bytes before the footer");
  }
  if (l.entry_count > l.index_size / (kIndexEntryFixedSize + 1)) {
    return Loss(where, "index: ", l.entry_count, " entries cannot fit in ", l.index_size, " bytes");
  }
  return l;
}

// The index's entries, each checked to name a known dtype, a range inside its tensor and data
// inside the data region [l.index_end, body_end).
absl::StatusOr<std::vector<ShardEntry>> ParseIndex(const std::string& index, const Layout& l,
                                                   uint64_t body_end, const std::string& where) {
  std::vector<ShardEntry> entries;
  entries.reserve(l.entry_count);
  const uint64_t index_size = index.size();
  uint64_t pos = 0;
  for (uint32_t i = 0; i < l.entry_count; ++i) {
    if (index_size - pos < kIndexEntryFixedSize) {
      return Loss(where, "index: entry ", i, " runs past the index");
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
      return Loss(where, "index: entry ", i, " has a name of ", name_size, " bytes");
    }
    e.name.assign(index.data() + pos, name_size);
    pos += name_size;
    const size_t esize = DTypeSize(e.dtype);
    uint64_t bytes, data_end, elem_end;
    if (esize == 0) {
      return Loss(where, "index: tensor \"", e.name, "\" has unknown ", DTypeName(e.dtype));
    }
    if (!CheckedAdd(e.offset, e.count, &elem_end) || elem_end > e.total) {
      return Loss(where, "index: tensor \"", e.name, "\" elements [", e.offset, ", +", e.count,
                  ") end past its total ", e.total);
    }
    if (!CheckedMul(e.count, esize, &bytes) || !CheckedAdd(e.data_offset, bytes, &data_end) ||
        e.data_offset < l.index_end || data_end > body_end) {
      return Loss(where, "index: tensor \"", e.name, "\" data [", e.data_offset, ", +", e.count,
                  " x ", esize, " bytes) outside the data region [", l.index_end, ", ", body_end,
                  ")");
    }
    entries.push_back(std::move(e));
  }
  if (pos != index_size)
    return Loss(where, "index: ", index_size - pos, " unused bytes at its end");
  return entries;
}

// Sorts the entries by tensor and offset and checks that no two ranges of a tensor overlap.
absl::Status SortAndCheckRanges(std::vector<ShardEntry>& entries, const std::string& where) {
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
      return Loss(where, "index: ", why);
    }
    if (e.count > 0) last_filled = &e;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ShardReader> ShardReader::Open(const fs::path& path) {
  const std::string where = path.string();
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, path, "cannot open");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(Cat(where, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kMinFileSize) {
    return Loss(where, "truncated (", size, " bytes, expected at least ", kMinFileSize, ")");
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
    return Loss(where, "bad magic (not a belay checkpoint shard)");
  }
  if (std::memcmp(footer + 8, kFooterMagic, sizeof kFooterMagic) != 0) {
    const uint64_t declared_size = Get<uint64_t>(header + kOffFileSize);
    if (size < declared_size) {
      return Loss(where, "truncated (", size, " bytes, expected at least ", declared_size, ")");
    }
    return Loss(where, "bad magic in footer");
  }
  const uint64_t body_end = size - kFooterSize;
  if (absl::Status s = VerifyChecksum(fd.get(), body_end, footer, path); !s.ok()) return s;

  // From here on the bytes are what the writer wrote; the checks below guard against a
  // writer bug or a file crafted to pass the checksum, so that no value read can send a
  // read or an allocation past the file.
  absl::StatusOr<Layout> layout = ParseHeader(header, size, where);
  if (!layout.ok()) return layout.status();
  ShardReader reader;
  reader.metadata_.resize(static_cast<size_t>(layout->metadata_size));
  if (absl::Status s = PreadAll(fd.get(), reader.metadata_.data(), reader.metadata_.size(),
                                layout->metadata_offset, path);
      !s.ok()) {
    return s;
  }
  std::string index(static_cast<size_t>(layout->index_size), '\0');
  if (absl::Status s = PreadAll(fd.get(), index.data(), index.size(), layout->index_offset, path);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<ShardEntry>> entries = ParseIndex(index, *layout, body_end, where);
  if (!entries.ok()) return entries.status();
  if (absl::Status s = SortAndCheckRanges(*entries, where); !s.ok()) return s;

  reader.entries_ = *std::move(entries);
  reader.path_ = path;
  reader.fd_ = std::move(fd);
  reader.file_size_ = size;
  reader.format_version_ = layout->version;
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
