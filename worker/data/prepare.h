// `belay data prepare`: text files to byte-level token shards (train and val splits).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace belay::data {

// The byte-level tokenizer: tokens 0..255 are the bytes of the text (UTF-8 or not, as they
// are), 256 ends a document. Its shards are version 1 (uint16 tokens).
inline constexpr int32_t kEndOfText = 256;
inline constexpr int64_t kByteVocabSize = 257;

// Appends one document to `tokens`: kEndOfText, then one token per byte of `text`.
void AppendByteDocument(std::string_view text, std::vector<int32_t>* tokens);

struct PrepareOptions {
  std::filesystem::path out_dir;              // created if missing
  std::vector<std::filesystem::path> inputs;  // one document per file, in this order
  double val_fraction = 0.05;                 // in [0, 1)
  int64_t shard_tokens = 100'000'000;         // most tokens per shard, 1 to kMaxShardTokens
};

struct SplitSummary {
  std::vector<std::filesystem::path> files;  // written, in order
  int64_t tokens = 0;
};

struct PrepareSummary {
  SplitSummary train;
  SplitSummary val;
};

// Tokenizes the inputs in order (each one document: end-of-text, then its bytes). Of the
// total, the last llround(val_fraction × total) tokens form the val split and the rest the
// train split; each split is written as out_dir/<split>_000000.bin, <split>_000001.bin, ...
// of at most shard_tokens tokens each, every file atomically. A split with no tokens has no
// files. Inputs are streamed, so memory does not grow with the corpus.
//
// Errors: InvalidArgument for bad options, an input that is empty or not a regular file, or a
// split that would leave no training tokens; NotFound / PermissionDenied for an input that
// cannot be read or an out_dir that cannot be created or written; FailedPrecondition when
// out_dir already holds train_*.bin or val_*.bin files (a later glob would mix them in);
// DataLoss for an input that changed size while being read. Shards written before an error
// are removed again.
absl::StatusOr<PrepareSummary> PrepareByteCorpus(const PrepareOptions& options);

}  // namespace belay::data
