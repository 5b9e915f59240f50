// Byte-level tokenization of text files into train/val token shards.
#include "worker/data/prepare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include "common/strings.h"
#include "worker/data/shard.h"

namespace belay::data {

namespace fs = std::filesystem;

namespace {

constexpr size_t kReadChunk = 1 << 20;

// Writes one split as numbered shards of at most `shard_tokens` tokens.
class SplitWriter {
 public:
  SplitWriter(fs::path dir, std::string prefix, int64_t shard_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), shard_tokens_(shard_tokens) {}

  absl::Status Append(std::span<const int32_t> tokens) {
    while (!tokens.empty()) {
      if (!current_) {
        fs::path path = dir_ / fmt::format("{}_{:06d}.bin", prefix_, summary_.files.size());
        absl::StatusOr<TokenShardWriter> w = TokenShardWriter::Create(path, kShardVersionU16);
        if (!w.ok()) return w.status();
        current_.emplace(*std::move(w));
      }
      auto n = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(tokens.size()),
                                                     shard_tokens_ - current_->num_tokens()));
      absl::Status st = current_->Append(tokens.first(n));
      if (!st.ok()) return st;
      summary_.tokens += static_cast<int64_t>(n);
      tokens = tokens.subspan(n);
      if (current_->num_tokens() == shard_tokens_) {
        st = CommitCurrent();
        if (!st.ok()) return st;
      }
    }
    return absl::OkStatus();
  }

  absl::Status Finish() { return current_ ? CommitCurrent() : absl::OkStatus(); }

  // Removes the shards committed so far (after a failure elsewhere).
  void RemoveWritten() {
    std::error_code ec;
    for (const fs::path& p : summary_.files) fs::remove(p, ec);
    current_.reset();
  }

  const SplitSummary& summary() const { return summary_; }

 private:
  absl::Status CommitCurrent() {
    absl::Status st = current_->Commit();
    if (st.ok()) summary_.files.push_back(current_->path());
    current_.reset();
    return st;
  }

  fs::path dir_;
  std::string prefix_;
  int64_t shard_tokens_;
  std::optional<TokenShardWriter> current_;
  SplitSummary summary_;
};

absl::Status ErrnoError(int err, const fs::path& path, std::string_view what) {
  return absl::ErrnoToStatus(err, Cat(path.string(), ": ", what));
}

// The size of a readable, non-empty regular file.
absl::StatusOr<int64_t> InputSize(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "cannot open");
  struct stat st {};
  int rc = ::fstat(fd, &st);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError(err, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(Cat(path.string(), ": not a regular file"));
  }
  if (st.st_size == 0) return absl::InvalidArgumentError(Cat(path.string(), ": empty file"));
  return static_cast<int64_t>(st.st_size);
}

absl::Status CheckOutDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoError(ec.value(), dir, "cannot create the output directory");
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if ((name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin")) {
      return absl::FailedPreconditionError(
          Cat(dir.string(), ": already holds shards (", name,
              "); remove them or choose another output directory"));
    }
  }
  if (ec) return ErrnoError(ec.value(), dir, "cannot list the output directory");
  return absl::OkStatus();
}

}  // namespace

void AppendByteDocument(std::string_view text, std::vector<int32_t>* tokens) {
  tokens->reserve(tokens->size() + text.size() + 1);
  tokens->push_back(kEndOfText);
  for (char c : text) tokens->push_back(static_cast<unsigned char>(c));
}

absl::StatusOr<PrepareSummary> PrepareByteCorpus(const PrepareOptions& options) {
  if (options.inputs.empty()) return absl::InvalidArgumentError("no input files");
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        Cat("validation fraction ", options.val_fraction, " is outside [0, 1)"));
  }
  if (options.shard_tokens < 1 || options.shard_tokens > kMaxShardTokens) {
    return absl::InvalidArgumentError(
        Cat("tokens per shard ", options.shard_tokens, " is outside [1, ", kMaxShardTokens, "]"));
  }
  // Sizes first: the split point must be known before the first token is written.
  int64_t total = 0;
  std::vector<int64_t> sizes;
  for (const fs::path& input : options.inputs) {
    absl::StatusOr<int64_t> size = InputSize(input);
    if (!size.ok()) return size.status();
    sizes.push_back(*size);
    total += 1 + *size;
  }
  const int64_t val_tokens = std::llround(options.val_fraction * static_cast<double>(total));
  const int64_t train_tokens = total - val_tokens;
  if (train_tokens <= 0) {
    return absl::InvalidArgumentError(Cat("a validation fraction of ", options.val_fraction,
                                          " leaves none of the ", total, " tokens to train on"));
  }
  absl::Status status = CheckOutDir(options.out_dir);
  if (!status.ok()) return status;

  SplitWriter train(options.out_dir, "train", options.shard_tokens);
  SplitWriter val(options.out_dir, "val", options.shard_tokens);
  int64_t emitted = 0;
  auto emit = [&](std::span<const int32_t> tokens) -> absl::Status {
    if (emitted < train_tokens) {
      auto n = static_cast<size_t>(
          std::min<int64_t>(static_cast<int64_t>(tokens.size()), train_tokens - emitted));
      absl::Status st = train.Append(tokens.first(n));
      if (!st.ok()) return st;
      emitted += static_cast<int64_t>(n);
      tokens = tokens.subspan(n);
      if (tokens.empty()) return absl::OkStatus();
    }
    emitted += static_cast<int64_t>(tokens.size());
    return val.Append(tokens);
  };
  auto tokenize = [&](const fs::path& input, int64_t size) -> absl::Status {
    int fd = ::open(input.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError(errno, input, "cannot open");
    std::string bytes(kReadChunk, '\0');
    std::vector<int32_t> tokens;
    AppendByteDocument("", &tokens);  // the document's end-of-text token
    absl::Status st = emit(tokens);
    int64_t read_total = 0;
    while (st.ok()) {
      ssize_t n = ::read(fd, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        st = ErrnoError(errno, input, "read failed");
        break;
      }
      if (n == 0) break;
      read_total += n;
      tokens.clear();
      for (ssize_t i = 0; i < n; ++i) {
        tokens.push_back(static_cast<unsigned char>(bytes[static_cast<size_t>(i)]));
      }
      if (read_total > size) break;  // reported below; do not write past the planned split
      st = emit(tokens);
    }
    ::close(fd);
    if (st.ok() && read_total != size) {
      st = absl::DataLossError(Cat(input.string(), ": changed while being read (", size,
                                   " bytes at the start, ", read_total, " read)"));
    }
    return st;
  };
  for (size_t i = 0; i < options.inputs.size() && status.ok(); ++i) {
    status = tokenize(options.inputs[i], sizes[i]);
  }
  if (status.ok()) status = train.Finish();
  if (status.ok()) status = val.Finish();
  if (!status.ok()) {
    train.RemoveWritten();
    val.RemoveWritten();
    return status;
  }
  return PrepareSummary{train.summary(), val.summary()};
}

}  // namespace belay::data
