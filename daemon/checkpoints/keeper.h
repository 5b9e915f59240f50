// The checkpoint keeper: the catalog of a campaign's checkpoints in the store and the files it
// names. It carries a checkpoint through its two-phase commit (shard reports kept, then one
// synced commit and a manifest beside the shards), applies retention, picks the checkpoint an
// attempt resumes from (re-hashing its shards, in the background if asked), and gives up
// saves that never completed or that a rollback left behind. Every catalog change is written
// (synced) before the files are touched; files are reached only through CheckpointFiles.
// The rules themselves are catalog.h's pure functions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "belay/v1/types.pb.h"
#include "common/campaign_spec.h"
#include "common/clock.h"
#include "common/mutex.h"
#include "daemon/checkpoints/checkpoint_files.h"
#include "daemon/store/event_log.h"
#include "daemon/store/store.h"

namespace belay::checkpoints {

namespace pb = ::belay::v1;

// What became of one rank's shard report.
struct ShardReceipt {
  bool committed = false;
  int32_t reported = 0;  // shards of the step recorded so far
  int32_t expected = 0;  // the attempt's world size
  std::string message;
};

// Where a resume stands (PrepareResume).
enum class Resume {
  kReady,    // the attempt's start_checkpoint_step is settled (cleared: from step 0)
  kPending,  // not settled yet (a candidate still being hashed, the owner's user entry not
             // answering): ask again next round
};

// Thread-safe; callers serialise the changes of one campaign (the supervisor calls it under
// its own lock). Background hashes read only files, through `files`, which must outlive the
// keeper; the keeper's destruction waits for them.
class CheckpointKeeper {
 public:
  CheckpointKeeper(store::Store& store, store::EventLog& events, const Clock& clock,
                   CheckpointFiles& files, bool verify_in_background)
      : store_(store),
        events_(events),
        clock_(clock),
        files_(files),
        verify_in_background_(verify_in_background) {}

  // One rank's report that its shard of `shard.step()` is on disk, for attempt `attempt` of
  // campaign `c` (running, `world_size` ranks, checkpoints under `spec.dir`): the first phase
  // of the commit (the report kept, synced). The report that completes the step commits it —
  // one synced write of the checkpoint and of `c` (its last_checkpoint_step), once the ranks'
  // tensor slices make a valid shard map, else the step is CORRUPT — then the manifest is
  // written beside the shards and retention (spec.keep_last, spec.keep_every) applied.
  // `metrics` (rank 0's) are the saved step's. Invalid reports are InvalidArgument /
  // FailedPrecondition (checkpoints::AddShard); store errors are returned.
  absl::StatusOr<ShardReceipt> AddShard(pb::Campaign& c, const CheckpointSpec& spec,
                                        int32_t attempt, int32_t world_size,
                                        const pb::CheckpointShard& shard,
                                        const pb::StepMetrics* metrics);

  // Checkpoint `c.last_checkpoint_step()` is good (`healthy_steps` trouble-free steps after
  // it): the campaign's last_good_checkpoint_step, the record's flag and an event, into `b`.
  absl::Status MarkGood(store::WriteBatch& b, pb::Campaign& c, int64_t healthy_steps,
                        int32_t attempt);

  // Before attempt `a` of `c` first starts. If it resumes: the newest committed checkpoint
  // at or below its start_checkpoint_step whose recorded shards verify (size and xxh3, read
  // as the owner); ones that fail become CORRUPT, ones whose directory is gone DELETED, each
  // with an event; without a usable one the attempt starts from step 0. A committed
  // checkpoint without its manifest gets it now. Then earlier attempts' unfinished (PENDING)
  // saves are given up. Changes go into `b`, for the caller to write, also while kPending
  // (what was found so far).
  absl::StatusOr<Resume> PrepareResume(const pb::Campaign& c, pb::Attempt& a, store::WriteBatch& b)
      ABSL_LOCKS_EXCLUDED(mu_);

  // While no rank of campaign `c` runs, after the catalog is written: step directories under
  // `root` that have no COMMITTED or CORRUPT record, and what was left half-written, go.
  // Failures are logged (the next attempt's start tries again).
  void RemoveUncommittedSteps(const pb::Campaign& c, const std::filesystem::path& root);

  // A rollback to step `target` (-1: to step 0) by attempt `attempt`: COMMITTED checkpoints
  // after it are given up (DELETED in `b`, their directories go at the next attempt's start)
  // and `c`'s last_checkpoint_step becomes `target`.
  absl::Status AbandonAfter(store::WriteBatch& b, pb::Campaign& c, int64_t target, int32_t attempt);

 private:
  // The problem VerifyShards finds in `ck` (empty: none), or nullopt while not known yet:
  // a background hash still runs (started by the first call), or the owner's user entry
  // does not answer.
  std::optional<std::string> VerifyOf(const pb::Checkpoint& ck, uint32_t owner)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<Resume> PickResume(const pb::Campaign& c, pb::Attempt& a, store::WriteBatch& b);
  absl::Status AbandonPendingSaves(const pb::Campaign& c, store::WriteBatch& b);
  // Marks `ck` DELETED for `why` (its directory goes at the next attempt's start), with an
  // event.
  absl::Status GiveUp(store::WriteBatch& b, const pb::Campaign& c, pb::Checkpoint& ck,
                      std::string why, int32_t attempt);
  // The second phase once every rank reported `ck`: commit (or CORRUPT), manifest, retention.
  absl::StatusOr<ShardReceipt> Commit(pb::Campaign& c, const CheckpointSpec& spec, int32_t attempt,
                                      pb::Checkpoint& ck, store::WriteBatch& b, ShardReceipt out);
  // After a commit: records retention deletes become DELETED (synced), then their
  // directories go.
  absl::Status ApplyRetention(const pb::Campaign& c, const CheckpointSpec& spec, int32_t attempt);

  store::Store& store_;
  store::EventLog& events_;
  const Clock& clock_;
  CheckpointFiles& files_;
  const bool verify_in_background_;

  Mutex mu_;
  // Background shard hashes by (campaign, step).
  std::map<std::pair<std::string, int64_t>, std::shared_future<std::optional<std::string>>>
      verifying_ ABSL_GUARDED_BY(mu_);
};

}  // namespace belay::checkpoints
