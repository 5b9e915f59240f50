// ShardReader::Open on any file, twice per input: as given (the checksum refuses almost every
// mutation), and "sealed" — the last 16 bytes replaced by a valid footer (xxh3 of the bytes
// before it, then the magic) — so that the header and index parsing behind the checksum is
// reached. Open must refuse bad files with DataLoss (never crash or allocate past the file);
// a shard it opens must read back every entry it lists.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/checksum.h"
#include "fuzz/fuzz_support.h"
#include "worker/ckpt/shard_file.h"
#include "worker/ckpt/shard_format.h"

namespace {

using belay::ckpt::DType;
using belay::ckpt::ShardEntry;
using belay::ckpt::ShardReader;

void CheckOpened(const ShardReader& r) {
  const std::vector<ShardEntry>& entries = r.entries();
  const ShardEntry* last_filled =
      nullptr;  // of the current tensor: the last range that is not empty
  for (size_t i = 0; i < entries.size(); ++i) {
    const ShardEntry& e = entries[i];
    const size_t esize = belay::ckpt::DTypeSize(e.dtype);
    FUZZ_CHECK(esize > 0 && !e.name.empty() && e.name.size() <= belay::ckpt::kMaxTensorNameBytes,
               "entry ", i);
    FUZZ_CHECK(e.offset <= e.total && e.count <= e.total - e.offset, "entry ", e.name,
               " inside its total");
    FUZZ_CHECK(e.count * esize <= r.file_size() && e.data_offset <= r.file_size() - e.count * esize,
               "entry ", e.name, " data inside the file");
    // Sorted by name, then offset; the ranges of a tensor do not overlap (an empty one
    // overlaps nothing).
    if (i > 0 && entries[i - 1].name != e.name) {
      FUZZ_CHECK(entries[i - 1].name < e.name, "entries sorted by name: ", entries[i - 1].name,
                 ", ", e.name);
      last_filled = nullptr;
    }
    if (i > 0 && entries[i - 1].name == e.name) {
      FUZZ_CHECK(entries[i - 1].offset <= e.offset, e.name, ": ranges sorted by offset");
    }
    if (e.count > 0) {
      FUZZ_CHECK(last_filled == nullptr || last_filled->offset + last_filled->count <= e.offset,
                 e.name, ": [", e.offset, ", +", e.count, ") overlaps [", last_filled->offset,
                 ", +", last_filled->count, ")");
      last_filled = &e;
    }
    // Every listed range reads back; a wrong element type is refused.
    std::vector<std::byte> out(static_cast<size_t>(e.count) * esize);
    const absl::Status s = r.ReadBytes(e.name, e.dtype, e.offset, out);
    FUZZ_CHECK(s.ok(), "entry ", e.name, " reads back: ", s.ToString());
    const DType other = e.dtype == DType::kU8 ? DType::kF32 : DType::kU8;
    FUZZ_CHECK(
        r.ReadBytes(e.name, other, e.offset, {}).code() == absl::StatusCode::kInvalidArgument,
        e.name, " read as another type");
    // The whole tensor: either it is all in this shard or the gap is OutOfRange.
    if (e.total * esize <= (1u << 20)) {
      std::vector<std::byte> whole(static_cast<size_t>(e.total) * esize);
      const absl::Status w = r.ReadBytes(e.name, e.dtype, 0, whole);
      FUZZ_CHECK(w.ok() || w.code() == absl::StatusCode::kOutOfRange, e.name,
                 " whole: ", w.ToString());
    }
  }
  FUZZ_CHECK(r.ReadBytes("", DType::kU8, 0, {}).code() == absl::StatusCode::kNotFound,
             "an unnamed tensor");
}

void OpenAndCheck(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  belay::fuzz::WriteFile(path, bytes);
  const absl::StatusOr<ShardReader> r = ShardReader::Open(path);
  if (r.ok()) {
    CheckOpened(*r);
  } else {
    FUZZ_CHECK(r.status().code() == absl::StatusCode::kDataLoss, r.status().ToString());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = belay::fuzz::ScratchDir() / "rank_00000.bin";
  const std::span<const std::byte> bytes = belay::fuzz::Bytes(data, size);
  OpenAndCheck(path, bytes);
  if (size < belay::ckpt::kFooterSize) return 0;
  std::vector<std::byte> sealed(bytes.begin(), bytes.end());
  const size_t body = size - belay::ckpt::kFooterSize;
  const uint64_t sum = belay::Xxh3(std::span<const std::byte>(sealed.data(), body));
  std::memcpy(sealed.data() + body, &sum, sizeof sum);
  std::memcpy(sealed.data() + body + sizeof sum, belay::ckpt::kFooterMagic,
              sizeof belay::ckpt::kFooterMagic);
  OpenAndCheck(path, sealed);
  return 0;
}
