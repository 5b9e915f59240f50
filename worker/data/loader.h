// The trainer's data loader: token shards cut into sequences, addressed by one global sequence
// index, so any rank can compute any sequence without coordination or saved buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "worker/data/loader_state.h"
#include "worker/data/shard.h"

namespace belay::data {

struct DataLoaderOptions {
  std::vector<std::string> globs;  // absolute glob patterns of shard files
  int64_t seq_len = 0;             // T: tokens a sequence trains on
  int64_t vocab_size = 0;          // every token must be below it
  uint64_t seed = 0;               // shuffle seed
  bool shuffle = true;
  // llm.c shards, or Megatron datasets (the globs name their .bin files; matched .idx files
  // are passed over). A Megatron dataset is read as one token stream, like a shard.
  ShardFormat format = ShardFormat::kLlmc;
};

// Sequence numbering
// ------------------
// The shards are the files the globs match, in path order (a file matched by two globs is
// used once). Sequence k of a shard is its tokens [k·T, k·T + T + 1): the model's inputs are
// the first T, its targets the last T, so neighbouring sequences share one token. A shard of n
// tokens holds (n − 1) / T sequences; its last (n − 1) mod T tokens are never used.
//
// Global sequence g (any uint64) belongs to epoch e = g / sequences_per_epoch() and position
// p = g mod sequences_per_epoch() in it. Without shuffle, positions walk the shards in path
// order and each shard's sequences in order. With shuffle, each epoch walks the shards in a
// permutation drawn from (seed, e) and each shard's sequences in a permutation drawn from
// (seed, e, shard index): every sequence comes exactly once per epoch, and epochs differ.
// The permutations are portable (worker/data/shuffle.h), so a sequence index names the same
// tokens on every machine.
//
// Sequence(g) is a pure function of g and the loader's options and data: there is no cursor.
// The trainer keeps next_sequence (in LoaderState, saved with every checkpoint) and resumes
// by continuing from it.
//
// Ranks and the global batch
// --------------------------
// With a global batch of G sequences per optimizer step, M sequences per micro-batch and W
// ranks (A = G / (M·W) micro-steps), rank r takes at micro-step a of the step that starts at
// sequence S (S = s·G when G never changed) the sequences
//     S + (a·W + r)·M + [0, M)                    (MicroBatchStart below)
// Over all (a, r) these are exactly S + [0, G), whatever W is: a run resumed on a different
// number of ranks trains on the same sequences in the same steps, and the next step starts at
// S + G.
//
// Thread-safety: all methods are const and may be called from several threads at once. The
// shuffle permutations of recently used (epoch, shard) pairs are computed on first use and
// cached behind a mutex; a permutation costs O(sequences in the shard) and is recomputed only
// when the trainer moves on to another shard or epoch.
class DataLoader {
 public:
  // Opens and validates every shard (TokenShard::Open reads each token once). Errors:
  // InvalidArgument for seq_len < 1, a relative pattern, or a shard too short for one
  // sequence (naming it); NotFound for a pattern that matches nothing (naming it); the
  // shard's error for a shard that does not validate.
  static absl::StatusOr<std::unique_ptr<DataLoader>> Open(const DataLoaderOptions& options);

  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Writes the T + 1 tokens of global sequence g to out[0, T + 1).
  void Sequence(uint64_t g, int32_t* out) const;

  // Where global sequence g comes from.
  struct Location {
    uint64_t epoch = 0;
    size_t shard = 0;      // index into shards(), i.e. path order
    int64_t sequence = 0;  // sequence index inside that shard
    bool operator==(const Location&) const = default;
  };
  Location Locate(uint64_t g) const;

  uint64_t sequences_per_epoch() const { return sequences_per_epoch_; }
  int64_t seq_len() const { return options_.seq_len; }
  const std::vector<TokenShard>& shards() const { return shards_; }
  int64_t sequences_in_shard(size_t shard) const;

  // xxh3 over the shards' file names (not their directories, so data may move), their token
  // counts, and T: a resume compares it with the saved one to detect changed data.
  uint64_t fingerprint() const { return fingerprint_; }

  // The state to save in a checkpoint, for a trainer whose next sequence is next_sequence.
  LoaderState State(uint64_t next_sequence) const;
  // OK when `saved` was produced by a loader over the same data (fingerprint), seed and
  // shuffle setting; FailedPrecondition saying what differs otherwise.
  absl::Status CheckResume(const LoaderState& saved) const;

 private:
  // An epoch's shard order and, for each position in it, the end of that shard's run of
  // positions (cumulative sequence counts).
  struct ShardOrder {
    std::vector<uint32_t> shards;
    std::vector<uint64_t> ends;
  };
  using Permutation = std::vector<uint32_t>;
  using CacheKey = std::pair<uint64_t, uint32_t>;  // (epoch, shard)
  template <typename V>
  using CacheEntries = std::vector<std::pair<CacheKey, std::shared_ptr<const V>>>;

  DataLoader(DataLoaderOptions options, std::vector<TokenShard> shards);
  ShardOrder MakeShardOrder(uint64_t epoch) const;
  std::shared_ptr<const ShardOrder> OrderOf(uint64_t epoch) const;
  std::shared_ptr<const Permutation> PermutationOf(uint64_t epoch, uint32_t shard) const;

  const DataLoaderOptions options_;
  const std::vector<TokenShard> shards_;
  std::vector<int64_t> sequences_in_shard_;
  uint64_t sequences_per_epoch_ = 0;
  uint64_t fingerprint_ = 0;
  std::shared_ptr<const ShardOrder> natural_order_;  // used when shuffle is off

  // Most recently used first; bounded (loader.cc), so memory stays a few permutations.
  mutable Mutex mu_;
  mutable CacheEntries<ShardOrder> orders_ ABSL_GUARDED_BY(mu_);
  mutable CacheEntries<Permutation> permutations_ ABSL_GUARDED_BY(mu_);
};

// The first global sequence that `rank` of `world_size` ranks trains on at `micro_step` of
// the step starting at sequence `step_start`, with `micro_batch` sequences per micro-batch:
// step_start + (micro_step · world_size + rank) · micro_batch. See "Ranks and the global
// batch" above.
uint64_t MicroBatchStart(uint64_t step_start, int64_t micro_batch, int world_size,
                         int64_t micro_step, int rank);

}  // namespace belay::data
