// The checkpoint catalog's rules, as functions over catalog records (pb::Checkpoint) and the
// files they name: assembling a step's shard reports (the first phase of the commit), the
// manifest a committed step gets beside its shards, verification before a resume, and which
// steps retention deletes. The supervisor persists the records and decides when to call these;
// nothing here touches the store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "common/ckpt/manifest.h"

namespace belay::checkpoints {

namespace pb = ::belay::v1;

// A fresh PENDING record for `step` of `campaign_id`, saved by `attempt` on `world_size` ranks
// into `dir` (the step directory, <root>/<campaign id>/step_<N>).
pb::Checkpoint NewPending(const std::string& campaign_id, int64_t step, int32_t attempt,
                          int32_t world_size, std::filesystem::path dir);

enum class ShardAdded {
  kAdded,     // a new rank's shard; more are missing
  kRepeat,    // the same report again (a retry): nothing changed
  kComplete,  // this report completed the step: every rank has reported
};

// The largest shard a rank may report (1 PiB): sizes above it are not a file's.
inline constexpr int64_t kMaxShardBytes = int64_t{1} << 50;

// Adds one rank's report to a PENDING record (shards kept in rank order). The shard must
// be for the record's step, from a rank in [0, world_size), with a size in 1..kMaxShardBytes
// (the record's total_bytes, kept as a running sum, never overflows), and its
// path must be the record's directory plus rank_<r>.bin. A rank reporting again with the same
// size and sum is a repeat; with a different one it is FailedPrecondition (a shard file
// cannot change after its rename). InvalidArgument for the rest, naming the field.
absl::StatusOr<ShardAdded> AddShard(pb::Checkpoint& checkpoint, const pb::CheckpointShard& shard);

// manifest.json for a complete record: one entry per rank (file, size, sum), the shard map
// assembled from the slices each rank reported (validated: every logical tensor covered
// exactly once, each slice inside its tensor), the metrics of the saved step. `campaign` is
// the directory name the step lives under. DataLoss naming the problem when the slices do
// not make a valid map (a rank reported a wrong plan, or none at all).
absl::StatusOr<ckpt::Manifest> BuildManifest(const pb::Checkpoint& checkpoint,
                                             const std::string& campaign);

// Re-checks every shard the record lists against the files: present, same size, same xxh3.
// The first problem in rank order ("…/rank_00001.bin: checksum mismatch: …"), or empty.
// Reads every byte of every shard.
std::string VerifyShards(const pb::Checkpoint& checkpoint);

struct RetentionPolicy {
  int64_t keep_last = 3;   // the newest this many committed steps stay (at least 1)
  int64_t keep_every = 0;  // steps that are multiples of this stay for good; 0: none
};

// Which COMMITTED checkpoints of one campaign retention deletes: those not among the newest
// keep_last, not a multiple of keep_every, and not in `protect` (the newest good checkpoint).
// The newest committed checkpoint always stays.
// Ascending steps. Records in other states are not considered.
std::vector<int64_t> PlanRetention(const std::vector<pb::Checkpoint>& all,
                                   const RetentionPolicy& policy,
                                   const std::vector<int64_t>& protect);

}  // namespace belay::checkpoints
