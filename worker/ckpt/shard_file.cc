// ShardWriter: lays out and writes a shard file through AtomicFile, hashing as it goes.
#include "worker/ckpt/shard_file.h"

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/strings.h"
#include "worker/ckpt/shard_format.h"
#include "xxhash.h"

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::span<const std::byte> AsBytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

}  // namespace

std::string CheckAgainstSiblings(const ShardEntry& e,
                                 const std::vector<const ShardEntry*>& siblings) {
  for (const ShardEntry* o : siblings) {
    if (o->dtype != e.dtype) {
      return Cat("tensor \"", e.name, "\" has dtype ", DTypeName(o->dtype), " and ",
                 DTypeName(e.dtype));
    }
    if (o->total != e.total) {
      return Cat("tensor \"", e.name, "\" has total ", o->total, " and ", e.total);
    }
    bool disjoint = e.count == 0 || o->count == 0 || e.offset + e.count <= o->offset ||
                    o->offset + o->count <= e.offset;
    if (!disjoint) {
      return Cat("tensor \"", e.name, "\": elements [", e.offset, ", ", e.offset + e.count,
                 ") overlap [", o->offset, ", ", o->offset + o->count, ")");
    }
  }
  return "";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kU8:
      return 1;
  }
  return 0;
}

std::string DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kI64:
      return "i64";
    case DType::kU8:
      return "u8";
  }
  return Cat("dtype(", static_cast<uint32_t>(dtype), ")");
}

// ---- ShardWriter ----

absl::Status ShardWriter::Add(std::string name, uint64_t offset, uint64_t total,
                              std::span<const float> data) {
  return AddBytes(std::move(name), DType::kF32, offset, total, std::as_bytes(data));
}

absl::Status ShardWriter::Add(std::string name, uint64_t offset, uint64_t total,
                              std::span<const int64_t> data) {
  return AddBytes(std::move(name), DType::kI64, offset, total, std::as_bytes(data));
}

absl::Status ShardWriter::Add(std::string name, uint64_t offset, uint64_t total,
                              std::span<const uint8_t> data) {
  return AddBytes(std::move(name), DType::kU8, offset, total, std::as_bytes(data));
}

absl::Status ShardWriter::AddBytes(std::string name, DType dtype, uint64_t offset, uint64_t total,
                                   std::span<const std::byte> data) {
  if (name.empty() || name.size() > kMaxTensorNameBytes) {
    return absl::InvalidArgumentError(
        Cat("tensor name must be 1 to ", kMaxTensorNameBytes, " bytes, got ", name.size()));
  }
  size_t esize = DTypeSize(dtype);
  if (esize == 0) {
    return absl::InvalidArgumentError(Cat("tensor \"", name, "\": unknown ", DTypeName(dtype)));
  }
  if (data.size() % esize != 0) {
    return absl::InvalidArgumentError(Cat("tensor \"", name, "\": ", data.size(),
                                          " bytes is not a whole number of ", DTypeName(dtype),
                                          " elements"));
  }
  uint64_t count = data.size() / esize;
  uint64_t end;
  if (!CheckedAdd(offset, count, &end) || end > total) {
    return absl::OutOfRangeError(Cat("tensor \"", name, "\": elements [", offset, ", +", count,
                                     ") end past its total ", total));
  }
  ShardEntry entry{std::move(name), dtype, offset, count, total, 0};
  std::vector<const ShardEntry*> siblings;
  for (const Pending& p : pending_) {
    if (p.entry.name == entry.name) siblings.push_back(&p.entry);
  }
  if (std::string why = CheckAgainstSiblings(entry, siblings); !why.empty()) {
    return absl::InvalidArgumentError(why);
  }
  pending_.push_back({std::move(entry), data});
  return absl::OkStatus();
}

absl::StatusOr<ShardFileInfo> ShardWriter::Write(const fs::path& final_path) const {
  if (pending_.size() > UINT32_MAX) {
    return absl::InvalidArgumentError(Cat(final_path.string(), ": too many entries"));
  }
  // Lay the file out: header, metadata, index, then each entry's data at a 64-byte boundary.
  std::string index;
  uint64_t index_size = 0;
  for (const Pending& p : pending_) index_size += kIndexEntryFixedSize + p.entry.name.size();
  const uint64_t metadata_offset = kHeaderSize;
  const uint64_t index_offset = metadata_offset + metadata_.size();
  uint64_t cursor = index_offset + index_size;
  std::vector<uint64_t> data_offsets;
  data_offsets.reserve(pending_.size());
  index.reserve(index_size);
  for (const Pending& p : pending_) {
    cursor = AlignUp(cursor, kDataAlignment);
    data_offsets.push_back(cursor);
    PutU32(&index, static_cast<uint32_t>(p.entry.name.size()));
    PutU32(&index, static_cast<uint32_t>(p.entry.dtype));
    PutU64(&index, p.entry.offset);
    PutU64(&index, p.entry.count);
    PutU64(&index, p.entry.total);
    PutU64(&index, cursor);
    index += p.entry.name;
    cursor += p.data.size();
  }
  const uint64_t file_size = cursor + kFooterSize;

  std::string head(kHeaderMagic, sizeof kHeaderMagic);
  PutU32(&head, kVersion);
  PutU32(&head, static_cast<uint32_t>(kHeaderSize));
  PutU64(&head, file_size);
  PutU64(&head, metadata_offset);
  PutU64(&head, metadata_.size());
  PutU64(&head, index_offset);
  PutU64(&head, index_size);
  PutU32(&head, static_cast<uint32_t>(pending_.size()));
  PutU32(&head, 0);
  head += metadata_;
  head += index;

  absl::StatusOr<AtomicFile> file = AtomicFile::Create(final_path);
  if (!file.ok()) return file.status();
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  if (state == nullptr) return absl::ResourceExhaustedError("cannot allocate an xxh3 state");
  XXH3_64bits_reset(state.get());
  auto emit = [&](std::span<const std::byte> bytes) {
    XXH3_64bits_update(state.get(), bytes.data(), bytes.size());
    return file->Append(bytes);
  };
  if (absl::Status s = emit(AsBytes(head)); !s.ok()) return s;
  static constexpr std::byte kZeros[kDataAlignment] = {};
  for (size_t i = 0; i < pending_.size(); ++i) {
    uint64_t pad = data_offsets[i] - file->bytes_appended();
    if (absl::Status s = emit(std::span<const std::byte>(kZeros, pad)); !s.ok()) return s;
    if (absl::Status s = emit(pending_[i].data); !s.ok()) return s;
  }
  std::string footer;
  PutU64(&footer, XXH3_64bits_digest(state.get()));
  footer.append(kFooterMagic, sizeof kFooterMagic);
  if (absl::Status s = emit(AsBytes(footer)); !s.ok()) return s;
  if (file->bytes_appended() != file_size) {
    return absl::InternalError(Cat(final_path.string(), ": wrote ", file->bytes_appended(),
                                   " bytes, laid out ", file_size));
  }
  if (absl::Status s = file->Commit(); !s.ok()) return s;
  return ShardFileInfo{final_path, file_size, XXH3_64bits_digest(state.get())};
}

}  // namespace belay::ckpt
