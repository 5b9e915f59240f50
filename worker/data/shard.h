// llm.c token shards: the on-disk format of training and validation data, read through a
// memory map and written atomically. The format is described in docs/data.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/durable_file.h"

namespace belay::data {

// A shard is a header of 256 little-endian int32 followed by the tokens:
//   header[0] = magic: kShardMagic, or kShardMagicLlama3 for version 7
//   header[1] = version: 1 = uint16 tokens (llm.c's GPT-2 format), 2 = uint32 tokens
//               (belay's variant, magic kShardMagic), 7 = uint32 tokens under magic
//               kShardMagicLlama3 (the format llm.c's dev/data scripts write for Llama 3)
//   header[2] = number of tokens
// The other 253 header words are written as zero and ignored when read.
inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardMagicLlama3 = 20240801;
inline constexpr int32_t kShardVersionU16 = 1;
inline constexpr int32_t kShardVersionU32 = 2;
inline constexpr int32_t kShardVersionLlama3 = 7;
inline constexpr int64_t kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;
// header[2] is an int32, so that is the most tokens one shard holds.
inline constexpr int64_t kMaxShardTokens = INT32_MAX;

// Bytes per token of a shard version: 2 or 4; 0 for a version that does not exist.
int TokenWidth(int32_t version);
// The magic a shard of `version` carries; 0 for a version that does not exist.
int32_t ShardMagic(int32_t version);

// Megatron-LM indexed datasets ("mmap" format, index version 1), as Megatron's preprocessing
// writes them: <prefix>.bin holds the tokens of every document back to back, with no header;
// <prefix>.idx says how to cut it, little-endian:
//   byte 0   magic "MMIDIDX\0\0" (9 bytes)
//   byte 9   version, uint64 = 1
//   byte 17  dtype code, uint8: 8 = uint16 tokens, 4 = int32 tokens (others are not tokens
//            belay reads: 1 uint8, 2 int8, 3 int16, 5 int64, 6 float64, 7 float32)
//   byte 18  sequence count N, uint64
//   byte 26  document index count D, uint64
//   byte 34  N int32 sequence lengths (tokens), then N int64 byte offsets of the sequences in
//            the .bin, then D int64 document boundaries (sequence indices, 0 first and N last),
//            then, in multimodal datasets only, N int8 sequence modes (ignored)
// belay reads the .bin as one token stream (the concatenation of the documents, as
// Megatron's GPT datasets also sample across document boundaries).
inline constexpr std::string_view kMegatronIndexMagic{"MMIDIDX\0\0", 9};
inline constexpr int64_t kMegatronIndexHeaderBytes = 34;
inline constexpr uint8_t kMegatronDTypeUint16 = 8;
inline constexpr uint8_t kMegatronDTypeInt32 = 4;

// The on-disk formats a TokenShard reads.
enum class ShardFormat { kLlmc, kMegatron };

// A validated, memory-mapped shard. Open checks everything a reader relies on, so Read never
// fails. Move-only; the map is released when the object is destroyed. Read is const and
// touches no mutable state, so any number of threads may call it at once.
class TokenShard {
 public:
  // Maps `path` and validates it against a vocabulary of `vocab_size` tokens (1 to 2^31):
  // at least a header long, a known magic, a version of that magic, a size of exactly header +
  // count × token width, and every token below vocab_size. Each error names the path and the byte
  // offset where the problem is: InvalidArgument for a file that is not a shard of this
  // vocabulary (too short for a header, bad magic, unknown version, a token out of range),
  // DataLoss for one whose size disagrees with its header (truncated or with extra bytes),
  // NotFound / PermissionDenied when it cannot be opened.
  static absl::StatusOr<TokenShard> Open(const std::filesystem::path& path, int64_t vocab_size);
  // A Megatron dataset: `bin` is <prefix>.bin, and <prefix>.idx beside it is its index. The
  // index is checked whole — magic, version, a token dtype, its size for its counts, lengths
  // not negative, the sequences back to back from byte 0, document boundaries from 0 to N in
  // order — then the .bin against it (exactly Σ lengths tokens) and every token (not negative,
  // below vocab_size). Errors as Open's, naming the .idx or the .bin and the byte offset.
  static absl::StatusOr<TokenShard> OpenMegatron(const std::filesystem::path& bin,
                                                 int64_t vocab_size);
  static absl::StatusOr<TokenShard> Open(const std::filesystem::path& path, int64_t vocab_size,
                                         ShardFormat format);

  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  ~TokenShard();

  const std::filesystem::path& path() const { return path_; }
  // The shard's version: kShardVersionU16 (2-byte tokens), kShardVersionU32 or
  // kShardVersionLlama3 (4-byte tokens); for Megatron data kShardVersionU16 or
  // kShardVersionU32 by token width.
  int32_t version() const { return version_; }
  int token_width() const { return TokenWidth(version_); }
  int64_t num_tokens() const { return num_tokens_; }

  // Copies tokens [first, first + count) into out[0, count). A range outside [0, num_tokens())
  // is a programming error: the process aborts with a message.
  void Read(int64_t first, int64_t count, int32_t* out) const;

 private:
  TokenShard(std::filesystem::path path, const std::byte* map, size_t map_bytes, int32_t version,
             int64_t num_tokens);
  void Unmap();

  std::filesystem::path path_;
  const std::byte* map_ = nullptr;  // the whole file, header included
  size_t map_bytes_ = 0;
  int64_t data_offset_ = kShardHeaderBytes;  // where the tokens start in the file
  int32_t version_ = 0;
  int64_t num_tokens_ = 0;
};

// Writes a shard incrementally and atomically through AtomicFile: tokens go to a hidden
// temporary file in the target's directory (`.<name>.<16 hex digits>.tmp`, which globs such as
// `train_*` do not match); Commit() writes the final count into the header, fsyncs, renames
// over `path` and fsyncs the directory. Until Commit succeeds nothing appears under `path`;
// destroying an uncommitted writer unlinks its temporary file. The first error is sticky:
// every later call returns it. Move-only, not thread-safe.
class TokenShardWriter {
 public:
  // InvalidArgument for a version other than 1, 2 or 7 (written with kShardMagicLlama3);
  // NotFound / PermissionDenied when the temporary file cannot be created in path's directory.
  static absl::StatusOr<TokenShardWriter> Create(const std::filesystem::path& path,
                                                 int32_t version);

  TokenShardWriter(TokenShardWriter&& other) noexcept = default;
  TokenShardWriter& operator=(TokenShardWriter&& other) noexcept = default;
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;
  ~TokenShardWriter() = default;

  // Appends tokens. InvalidArgument (naming the token's index in the shard and its value)
  // for a token that is negative or does not fit the version's width, or when the shard
  // would exceed kMaxShardTokens; the error code of errno for a failed write.
  absl::Status Append(std::span<const int32_t> tokens);
  absl::Status Commit();

  int64_t num_tokens() const { return num_tokens_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  TokenShardWriter(std::filesystem::path path, AtomicFile file, int32_t version);
  // Keeps the first error and returns it; drops the file, which unlinks the temporary.
  absl::Status Fail(absl::Status status);

  std::filesystem::path path_;
  std::optional<AtomicFile> file_;  // empty once a call has failed
  int32_t version_ = 0;
  int64_t num_tokens_ = 0;
  bool committed_ = false;
  absl::Status error_;
};

// Writes `tokens` as one shard of `version` at `path`, atomically (see TokenShardWriter).
absl::Status WriteTokenShard(const std::filesystem::path& path, std::span<const int32_t> tokens,
                             int32_t version);

}  // namespace belay::data
