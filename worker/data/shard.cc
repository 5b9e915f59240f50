// llm.c token shards: mmap-based validating reader and atomic writer (over AtomicFile).
#include "worker/data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/strings.h"

namespace belay::data {

// Shards are little-endian and are read and written by memcpy of native integers.
static_assert(std::endian::native == std::endian::little,
              "token shards assume a little-endian host");

namespace fs = std::filesystem;

namespace {

// "<path>: byte <offset>: <message>", the form of every format error.
std::string At(const fs::path& path, int64_t offset, std::string_view message) {
  return Cat(path.string(), ": byte ", offset, ": ", message);
}

// The little-endian T at byte `offset` (the files are read by memcpy of native integers).
template <typename T>
T Word(const std::byte* map, int64_t offset) {
  T v;
  std::memcpy(&v, map + offset, sizeof(T));
  return v;
}

int32_t HeaderWord(const std::byte* map, int index) {
  return Word<int32_t>(map, 4 * int64_t{index});
}

template <typename T>
int64_t TokenAt(const std::byte* tokens, int64_t i) {
  return static_cast<int64_t>(Word<T>(tokens, i * static_cast<int64_t>(sizeof(T))));
}

// Index of the first token outside [0, vocab_size) in `n` tokens of type T, or -1.
template <typename T>
int64_t FirstOutOfRange(const std::byte* tokens, int64_t n, int64_t vocab_size) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = TokenAt<T>(tokens, i);
    if (t >= vocab_size) return i;
    if constexpr (std::is_signed_v<T>) {
      if (t < 0) return i;
    }
  }
  return -1;
}

// Validates a mapped file; the checks of TokenShard::Open.
absl::Status Validate(const fs::path& path, const std::byte* map, int64_t size, int64_t vocab_size,
                      int32_t* version, int64_t* num_tokens) {
  if (size < kShardHeaderBytes) {
    return absl::InvalidArgumentError(At(path, 0,
                                         Cat("file is ", size, " bytes, shorter than the ",
                                             kShardHeaderBytes, "-byte shard header")));
  }
  int32_t magic = HeaderWord(map, 0);
  if (magic != kShardMagic && magic != kShardMagicLlama3) {
    return absl::InvalidArgumentError(At(path, 0,
                                         Cat("magic is ", magic, ", want ", kShardMagic, " or ",
                                             kShardMagicLlama3, " (not an llm.c token shard)")));
  }
  *version = HeaderWord(map, 1);
  int width = TokenWidth(*version);
  if (width == 0 || ShardMagic(*version) != magic) {
    return absl::InvalidArgumentError(
        At(path, 4,
           magic == kShardMagic ? Cat("version is ", *version, ", want ", kShardVersionU16,
                                      " (uint16 tokens) or ", kShardVersionU32, " (uint32 tokens)")
                                : Cat("version is ", *version, ", want ", kShardVersionLlama3,
                                      " (uint32 tokens) under magic ", kShardMagicLlama3)));
  }
  int32_t count = HeaderWord(map, 2);
  if (count < 0) {
    return absl::DataLossError(At(path, 8, Cat("token count is ", count, ", negative")));
  }
  *num_tokens = count;
  int64_t want = kShardHeaderBytes + int64_t{count} * width;
  if (size != want) {
    std::string what = size < want ? Cat("truncated: ", want - size, " bytes missing")
                                   : Cat(size - want, " extra bytes");
    return absl::DataLossError(
        At(path, std::min(size, want),
           Cat("file is ", size, " bytes, but its header says ", kShardHeaderBytes, " + ", count,
               " tokens × ", width, " bytes = ", want, " bytes (", what, ")")));
  }
  const std::byte* tokens = map + kShardHeaderBytes;
  // uint16 tokens cannot reach a vocabulary of 65,536 or more: no need to look.
  int64_t bad =
      width == 2 ? (vocab_size > 0xffff ? -1 : FirstOutOfRange<uint16_t>(tokens, count, vocab_size))
                 : FirstOutOfRange<uint32_t>(tokens, count, vocab_size);
  if (bad >= 0) {
    int64_t value = width == 2 ? TokenAt<uint16_t>(tokens, bad) : TokenAt<uint32_t>(tokens, bad);
    return absl::InvalidArgumentError(
        At(path, kShardHeaderBytes + bad * width,
           Cat("token ", bad, " is ", value, ", not below the vocabulary size ", vocab_size)));
  }
  return absl::OkStatus();
}

}  // namespace

int TokenWidth(int32_t version) {
  switch (version) {
    case kShardVersionU16:
      return 2;
    case kShardVersionU32:
    case kShardVersionLlama3:
      return 4;
    default:
      return 0;
  }
}

int32_t ShardMagic(int32_t version) {
  switch (version) {
    case kShardVersionU16:
    case kShardVersionU32:
      return kShardMagic;
    case kShardVersionLlama3:
      return kShardMagicLlama3;
    default:
      return 0;
  }
}

namespace {

// A read-only private map of a whole regular file (nullptr for an empty one).
struct Mapped {
  const std::byte* map = nullptr;
  int64_t size = 0;
};

absl::StatusOr<Mapped> MapFile(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "cannot open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, path, "cannot stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(Cat(path.string(), ": not a regular file"));
  }
  Mapped m;
  m.size = st.st_size;
  if (m.size > 0) {
    void* p = ::mmap(nullptr, static_cast<size_t>(m.size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return ErrnoError(err, path, "cannot mmap");
    }
    m.map = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping keeps the file open
  return m;
}

absl::Status CheckVocabulary(const fs::path& path, int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > int64_t{1} << 31) {
    return absl::InvalidArgumentError(
        Cat(path.string(), ": vocabulary size ", vocab_size, " is outside [1, 2^31]"));
  }
  return absl::OkStatus();
}

// Checks a mapped Megatron index (see shard.h); sets the token width and count.
absl::Status ValidateMegatronIndex(const fs::path& idx, const std::byte* map, int64_t size,
                                   int* width, int64_t* num_tokens) {
  const int64_t h = kMegatronIndexHeaderBytes;
  if (size < h) {
    return absl::InvalidArgumentError(
        At(idx, 0, Cat("file is ", size, " bytes, shorter than the ", h, "-byte index header")));
  }
  if (std::string_view(reinterpret_cast<const char*>(map), kMegatronIndexMagic.size()) !=
      kMegatronIndexMagic) {
    return absl::InvalidArgumentError(
        At(idx, 0, "magic is not \"MMIDIDX\" (not the index of a Megatron indexed dataset)"));
  }
  if (const uint64_t version = Word<uint64_t>(map, 9); version != 1) {
    return absl::InvalidArgumentError(At(idx, 9, Cat("index version is ", version, ", want 1")));
  }
  const uint8_t dtype = Word<uint8_t>(map, 17);
  if (dtype == kMegatronDTypeUint16) {
    *width = 2;
  } else if (dtype == kMegatronDTypeInt32) {
    *width = 4;
  } else {
    static constexpr std::string_view kNames[] = {"?",     "uint8",   "int8",    "int16", "int32",
                                                  "int64", "float64", "float32", "uint16"};
    return absl::InvalidArgumentError(
        At(idx, 17,
           Cat("dtype code ", int{dtype}, " (", dtype < 9 ? kNames[dtype] : "unknown",
               ") is not a token type belay reads; want ", int{kMegatronDTypeUint16},
               " (uint16) or ", int{kMegatronDTypeInt32}, " (int32)")));
  }
  const uint64_t n = Word<uint64_t>(map, 18), d = Word<uint64_t>(map, 26);
  // Counts from a damaged header may be anything: compare them with the size before
  // multiplying.
  const uint64_t room = static_cast<uint64_t>(size - h);
  const bool fits = n <= room / 12 && d <= (room - n * 12) / 8;
  const int64_t want = fits ? h + static_cast<int64_t>(n * 12 + d * 8) : INT64_MAX;
  if (size != want && (!fits || size != want + static_cast<int64_t>(n))) {
    const std::string what = size < want ? "truncated" : "extra bytes";
    return absl::DataLossError(
        At(idx, std::min(size, want),
           Cat("file is ", size, " bytes, but its header counts ", n, " sequences and ", d,
               " document boundaries: ", h, " + ", n, " × 12 + ", d, " × 8 bytes (", what, ")")));
  }
  const int64_t lengths = h, pointers = h + 4 * static_cast<int64_t>(n),
                docs = pointers + 8 * static_cast<int64_t>(n);
  int64_t next = 0;  // the byte where the next sequence must start
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
    const int32_t len = Word<int32_t>(map, lengths + 4 * i);
    if (len < 0)
      return absl::DataLossError(
          At(idx, lengths + 4 * i, Cat("sequence ", i, " has length ", len)));
    const int64_t ptr = Word<int64_t>(map, pointers + 8 * i);
    if (ptr != next) {
      return absl::DataLossError(
          At(idx, pointers + 8 * i,
             Cat("sequence ", i, " starts at byte ", ptr, " of the .bin, want ", next,
                 " (the sequences must lie back to back)")));
    }
    next += int64_t{len} * *width;
  }
  if (d == 0)
    return absl::DataLossError(At(idx, 26, "no document boundaries (want at least 0 and N)"));
  int64_t prev = 0;
  for (int64_t j = 0; j < static_cast<int64_t>(d); ++j) {
    const int64_t b = Word<int64_t>(map, docs + 8 * j);
    const bool last = j + 1 == static_cast<int64_t>(d);
    if ((j == 0 && b != 0) || b < prev || b > static_cast<int64_t>(n) ||
        (last && b != static_cast<int64_t>(n))) {
      return absl::DataLossError(
          At(idx, docs + 8 * j,
             Cat("document boundary ", j, " is ", b, "; want 0 first, then non-decreasing, ", n,
                 " (the sequence count) last")));
    }
    prev = b;
  }
  *num_tokens = next / *width;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenShard> TokenShard::Open(const fs::path& path, int64_t vocab_size,
                                            ShardFormat format) {
  return format == ShardFormat::kMegatron ? OpenMegatron(path, vocab_size) : Open(path, vocab_size);
}

absl::StatusOr<TokenShard> TokenShard::Open(const fs::path& path, int64_t vocab_size) {
  if (absl::Status s = CheckVocabulary(path, vocab_size); !s.ok()) return s;
  absl::StatusOr<Mapped> m = MapFile(path);
  if (!m.ok()) return m.status();
  TokenShard shard(path, m->map, static_cast<size_t>(m->size), 0, 0);
  absl::Status status =
      Validate(path, m->map, m->size, vocab_size, &shard.version_, &shard.num_tokens_);
  if (!status.ok()) return status;
  return shard;
}

absl::StatusOr<TokenShard> TokenShard::OpenMegatron(const fs::path& bin, int64_t vocab_size) {
  if (absl::Status s = CheckVocabulary(bin, vocab_size); !s.ok()) return s;
  if (bin.extension() != ".bin") {
    return absl::InvalidArgumentError(
        Cat(bin.string(),
            ": not the .bin of a Megatron dataset (its index <prefix>.idx is read beside it)"));
  }
  fs::path idx = bin;
  idx.replace_extension(".idx");
  int width = 0;
  int64_t count = 0;
  {
    absl::StatusOr<Mapped> m = MapFile(idx);
    if (!m.ok()) return m.status();
    absl::Status s = ValidateMegatronIndex(idx, m->map, m->size, &width, &count);
    if (m->map != nullptr) ::munmap(const_cast<std::byte*>(m->map), static_cast<size_t>(m->size));
    if (!s.ok()) return s;
  }
  absl::StatusOr<Mapped> m = MapFile(bin);
  if (!m.ok()) return m.status();
  TokenShard shard(bin, m->map, static_cast<size_t>(m->size),
                   width == 2 ? kShardVersionU16 : kShardVersionU32, count);
  shard.data_offset_ = 0;
  const int64_t want = count * width;
  if (m->size != want) {
    const std::string what = m->size < want ? Cat("truncated: ", want - m->size, " bytes missing")
                                            : Cat(m->size - want, " extra bytes");
    return absl::DataLossError(
        At(bin, std::min(m->size, want),
           Cat("file is ", m->size, " bytes, but its index ", idx.filename().string(), " says ",
               count, " tokens × ", width, " bytes = ", want, " bytes (", what, ")")));
  }
  const int64_t bad = width == 2 ? FirstOutOfRange<uint16_t>(m->map, count, vocab_size)
                                 : FirstOutOfRange<int32_t>(m->map, count, vocab_size);
  if (bad >= 0) {
    const int64_t t = width == 2 ? TokenAt<uint16_t>(m->map, bad) : TokenAt<int32_t>(m->map, bad);
    return absl::InvalidArgumentError(
        At(bin, bad * width,
           Cat("token ", bad, " is ", t, ", not in [0, ", vocab_size, ") (the vocabulary)")));
  }
  return shard;
}

TokenShard::TokenShard(fs::path path, const std::byte* map, size_t map_bytes, int32_t version,
                       int64_t num_tokens)
    : path_(std::move(path)),
      map_(map),
      map_bytes_(map_bytes),
      version_(version),
      num_tokens_(num_tokens) {}

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      data_offset_(other.data_offset_),
      version_(std::exchange(other.version_, 0)),
      num_tokens_(std::exchange(other.num_tokens_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    data_offset_ = other.data_offset_;
    version_ = std::exchange(other.version_, 0);
    num_tokens_ = std::exchange(other.num_tokens_, 0);
  }
  return *this;
}

TokenShard::~TokenShard() { Unmap(); }

void TokenShard::Unmap() {
  if (map_ != nullptr) {
    ::munmap(const_cast<std::byte*>(map_), map_bytes_);
    map_ = nullptr;
    map_bytes_ = 0;
  }
}

void TokenShard::Read(int64_t first, int64_t count, int32_t* out) const {
  if (first < 0 || count < 0 || first > num_tokens_ - count) {
    std::fprintf(stderr, "TokenShard::Read: tokens [%lld, %lld + %lld) outside %s (%lld tokens)\n",
                 static_cast<long long>(first), static_cast<long long>(first),
                 static_cast<long long>(count), path_.c_str(), static_cast<long long>(num_tokens_));
    std::abort();
  }
  const std::byte* tokens = map_ + data_offset_;
  if (version_ == kShardVersionU16) {
    for (int64_t i = 0; i < count; ++i) {
      out[i] = static_cast<int32_t>(TokenAt<uint16_t>(tokens, first + i));
    }
  } else {
    // Open checked every token against a vocabulary of at most 2^31, so each fits an int32.
    std::memcpy(out, tokens + first * 4, static_cast<size_t>(count) * 4);
  }
}

// ---- writing ----

absl::StatusOr<TokenShardWriter> TokenShardWriter::Create(const fs::path& path, int32_t version) {
  if (TokenWidth(version) == 0) {
    return absl::InvalidArgumentError(Cat(path.string(), ": shard version ", version, " is not ",
                                          kShardVersionU16, ", ", kShardVersionU32, " or ",
                                          kShardVersionLlama3));
  }
  // Mode 0666: shards get the umask's usual mode, like any other output file.
  absl::StatusOr<AtomicFile> file =
      AtomicFile::Create(path, AtomicFileOptions{.hidden_temp_name = true, .mode = 0666});
  if (!file.ok()) return file.status();
  TokenShardWriter writer(path, *std::move(file), version);
  // The header goes in now with a count of 0 and is rewritten by Commit.
  std::array<std::byte, kShardHeaderBytes> header{};
  absl::Status status = writer.file_->Append(header);
  if (!status.ok()) return writer.Fail(status);
  return writer;
}

TokenShardWriter::TokenShardWriter(fs::path path, AtomicFile file, int32_t version)
    : path_(std::move(path)), file_(std::move(file)), version_(version) {}

absl::Status TokenShardWriter::Fail(absl::Status status) {
  if (error_.ok()) error_ = std::move(status);
  file_.reset();
  return error_;
}

absl::Status TokenShardWriter::Append(std::span<const int32_t> tokens) {
  if (!error_.ok()) return error_;
  if (committed_) return absl::FailedPreconditionError(Cat(path_.string(), ": already committed"));
  if (static_cast<int64_t>(tokens.size()) > kMaxShardTokens - num_tokens_) {
    return Fail(absl::InvalidArgumentError(
        Cat(path_.string(), ": ", num_tokens_ + static_cast<int64_t>(tokens.size()),
            " tokens exceed the ", kMaxShardTokens, " a shard can hold")));
  }
  const int64_t limit = version_ == kShardVersionU16 ? int64_t{1} << 16 : int64_t{1} << 32;
  constexpr size_t kChunk = 1 << 16;
  const auto width = static_cast<size_t>(TokenWidth(version_));
  std::vector<std::byte> buf;
  for (size_t begin = 0; begin < tokens.size(); begin += kChunk) {
    size_t end = std::min(tokens.size(), begin + kChunk);
    buf.resize((end - begin) * width);
    for (size_t i = begin; i < end; ++i) {
      int32_t t = tokens[i];
      if (t < 0 || t >= limit) {
        return Fail(absl::InvalidArgumentError(
            Cat(path_.string(), ": token ", num_tokens_ + static_cast<int64_t>(i), " is ", t,
                ", which does not fit version ", version_, " (",
                version_ == kShardVersionU16 ? "uint16" : "uint32", " tokens)")));
      }
      if (version_ == kShardVersionU16) {
        auto v = static_cast<uint16_t>(t);
        std::memcpy(buf.data() + (i - begin) * width, &v, sizeof(v));
      } else {
        auto v = static_cast<uint32_t>(t);
        std::memcpy(buf.data() + (i - begin) * width, &v, sizeof(v));
      }
    }
    absl::Status st = file_->Append(buf);
    if (!st.ok()) return Fail(st);
  }
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

absl::Status TokenShardWriter::Commit() {
  if (!error_.ok()) return error_;
  if (committed_) return absl::OkStatus();
  std::array<int32_t, 3> words = {ShardMagic(version_), version_,
                                  static_cast<int32_t>(num_tokens_)};
  if (absl::Status s = file_->WriteAt(0, std::as_bytes(std::span(words))); !s.ok()) return Fail(s);
  if (absl::Status s = file_->Commit(); !s.ok()) return Fail(s);
  committed_ = true;
  return absl::OkStatus();
}

absl::Status WriteTokenShard(const fs::path& path, std::span<const int32_t> tokens,
                             int32_t version) {
  absl::StatusOr<TokenShardWriter> writer = TokenShardWriter::Create(path, version);
  if (!writer.ok()) return writer.status();
  absl::Status status = writer->Append(tokens);
  if (!status.ok()) return status;
  return writer->Commit();
}

}  // namespace belay::data
