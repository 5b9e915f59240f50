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

int32_t HeaderWord(const std::byte* map, int index) {
  int32_t v;
  std::memcpy(&v, map + 4 * index, sizeof(v));
  return v;
}

// Index of the first token >= vocab_size in `n` tokens of type T, or -1.
template <typename T>
int64_t FirstOutOfRange(const std::byte* tokens, int64_t n, int64_t vocab_size) {
  for (int64_t i = 0; i < n; ++i) {
    T t;
    std::memcpy(&t, tokens + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
    if (static_cast<int64_t>(t) >= vocab_size) return i;
  }
  return -1;
}

template <typename T>
int64_t TokenAt(const std::byte* tokens, int64_t i) {
  T t;
  std::memcpy(&t, tokens + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return static_cast<int64_t>(t);
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
  if (magic != kShardMagic) {
    return absl::InvalidArgumentError(At(
        path, 0, Cat("magic is ", magic, ", want ", kShardMagic, " (not an llm.c token shard)")));
  }
  *version = HeaderWord(map, 1);
  int width = TokenWidth(*version);
  if (width == 0) {
    return absl::InvalidArgumentError(
        At(path, 4,
           Cat("version is ", *version, ", want ", kShardVersionU16, " (uint16 tokens) or ",
               kShardVersionU32, " (uint32 tokens)")));
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
      return 4;
    default:
      return 0;
  }
}

absl::StatusOr<TokenShard> TokenShard::Open(const fs::path& path, int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > int64_t{1} << 31) {
    return absl::InvalidArgumentError(
        Cat(path.string(), ": vocabulary size ", vocab_size, " is outside [1, 2^31]"));
  }
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
  int64_t size = st.st_size;
  const std::byte* map = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return ErrnoError(err, path, "cannot mmap");
    }
    map = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping keeps the file open
  TokenShard shard(path, map, static_cast<size_t>(size), 0, 0);
  absl::Status status = Validate(path, map, size, vocab_size, &shard.version_, &shard.num_tokens_);
  if (!status.ok()) return status;
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
      version_(std::exchange(other.version_, 0)),
      num_tokens_(std::exchange(other.num_tokens_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
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
  const std::byte* tokens = map_ + kShardHeaderBytes;
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
                                          kShardVersionU16, " or ", kShardVersionU32));
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
  std::array<int32_t, 3> words = {kShardMagic, version_, static_cast<int32_t>(num_tokens_)};
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
