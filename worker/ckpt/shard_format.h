// Shard file format v1: the constants and checks that the writer (shard_file.cc) and the
// reader (shard_reader.cc) share. Internal to belay_ckpt; the byte table is in
// docs/checkpoints.md, keep the two in step.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "worker/ckpt/shard_file.h"

namespace belay::ckpt {

static_assert(std::endian::native == std::endian::little,
              "shard files are little-endian and encoded with memcpy");

inline constexpr char kHeaderMagic[8] = {'B', 'E', 'L', 'A', 'Y', 'C', 'K', 'P'};
inline constexpr char kFooterMagic[8] = {'B', 'E', 'L', 'A', 'Y', 'E', 'N', 'D'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint64_t kHeaderSize = 64;
inline constexpr uint64_t kFooterSize = 16;  // xxh3 of everything before it, then the magic
inline constexpr uint64_t kMinFileSize = kHeaderSize + kFooterSize;
inline constexpr uint64_t kIndexEntryFixedSize = 40;  // before the name bytes
inline constexpr uint64_t kDataAlignment = 64;

// Header field offsets.
inline constexpr size_t kOffVersion = 8;
inline constexpr size_t kOffHeaderSize = 12;
inline constexpr size_t kOffFileSize = 16;
inline constexpr size_t kOffMetadataOffset = 24;
inline constexpr size_t kOffMetadataSize = 32;
inline constexpr size_t kOffIndexOffset = 40;
inline constexpr size_t kOffIndexSize = 48;
inline constexpr size_t kOffEntryCount = 56;
inline constexpr size_t kOffReserved = 60;

inline void PutU32(std::string* out, uint32_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}
inline void PutU64(std::string* out, uint64_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// a + b and a * b, or false when the result does not fit.
inline bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* sum) {
  return !__builtin_add_overflow(a, b, sum);
}
inline bool CheckedMul(uint64_t a, uint64_t b, uint64_t* product) {
  return !__builtin_mul_overflow(a, b, product);
}

// The consistency rule for ranges of one tensor, shared by ShardWriter::Add and the reader's
// index validation: same dtype, same total, no overlap. `siblings` are the other entries of
// e's tensor; returns why `e` does not fit with them, or an empty string.
std::string CheckAgainstSiblings(const ShardEntry& e,
                                 const std::vector<const ShardEntry*>& siblings);

}  // namespace belay::ckpt
