// CheckpointKeeper: the catalog written first, then the files.
#include "daemon/checkpoints/keeper.h"

#include <algorithm>
#include <vector>

#include "belay/v1/enum_names.h"
#include "common/ckpt/layout.h"
#include "common/strings.h"
#include "daemon/checkpoints/catalog.h"
#include "daemon/store/records.h"
#include "spdlog/spdlog.h"

namespace belay::checkpoints {

namespace fs = std::filesystem;
using store::Durability;
using store::WriteBatch;

absl::StatusOr<ShardReceipt> CheckpointKeeper::AddShard(pb::Campaign& c, const CheckpointSpec& spec,
                                                        int32_t attempt, int32_t world_size,
                                                        const pb::CheckpointShard& shard,
                                                        const pb::StepMetrics* metrics) {
  const std::string& id = c.id();
  ShardReceipt out;
  out.expected = world_size;
  absl::StatusOr<std::optional<pb::Checkpoint>> existing =
      store::GetCheckpoint(store_, id, shard.step());
  if (!existing.ok()) return existing.status();
  WriteBatch b;
  pb::Checkpoint ck;
  if (existing->has_value() && (*existing)->attempt_number() == attempt &&
      ((*existing)->state() == pb::CHECKPOINT_STATE_PENDING ||
       (*existing)->state() == pb::CHECKPOINT_STATE_COMMITTED)) {
    ck = **existing;
  } else {
    if (existing->has_value() && (*existing)->state() != pb::CHECKPOINT_STATE_DELETED) {
      // An earlier attempt's save of this step, on a trajectory given up since (the ranks
      // overwrite its directory).
      if (absl::Status s = events_.Add(
              b, c, pb::EVENT_KIND_CHECKPOINT_DELETED, pb::SEVERITY_INFO,
              Cat("checkpoint step ", shard.step(), " of attempt ", (*existing)->attempt_number(),
                  " (", pb::ShortName((*existing)->state()), ") is replaced by attempt ", attempt,
                  "'s save"),
              attempt);
          !s.ok()) {
        return s;
      }
    }
    ck = NewPending(id, shard.step(), attempt, world_size,
                    ckpt::StepDir(spec.dir, id, shard.step()));
  }
  const bool was_committed = ck.state() == pb::CHECKPOINT_STATE_COMMITTED;
  absl::StatusOr<ShardAdded> added = checkpoints::AddShard(ck, shard);
  if (!added.ok()) return added.status();
  out.reported = ck.shards_size();
  if (*added == ShardAdded::kRepeat) {
    out.committed = was_committed;
    return out;
  }
  if (was_committed)
    return absl::FailedPreconditionError(
        Cat("checkpoint step ", shard.step(), " is already committed"));
  if (metrics != nullptr && shard.rank() == 0) *ck.mutable_metrics() = *metrics;
  if (*added == ShardAdded::kAdded) {
    // Phase one: the report is kept (synced: a restarted belayd must not forget it).
    store::Put(b, ck);
    if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
    return out;
  }
  return Commit(c, spec, attempt, ck, b, out);
}

absl::StatusOr<ShardReceipt> CheckpointKeeper::Commit(pb::Campaign& c, const CheckpointSpec& spec,
                                                      int32_t attempt, pb::Checkpoint& ck,
                                                      WriteBatch& b, ShardReceipt out) {
  // Phase two: every rank has reported. The commit is one synced write.
  store::SetTime(ck.mutable_committed_time(), clock_.Now());
  absl::StatusOr<ckpt::Manifest> manifest = BuildManifest(ck, c.id());
  if (!manifest.ok()) {
    ck.set_state(pb::CHECKPOINT_STATE_CORRUPT);
    ck.set_state_message(std::string(manifest.status().message()));
    store::Put(b, ck);
    if (absl::Status s = events_.Add(
            b, c, pb::EVENT_KIND_CHECKPOINT_CORRUPT, pb::SEVERITY_ERROR,
            Cat("checkpoint step ", ck.step(), " cannot be committed: ", ck.state_message()),
            attempt);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
    out.message = ck.state_message();
    return out;
  }
  ck.set_state(pb::CHECKPOINT_STATE_COMMITTED);
  store::Put(b, ck);
  if (!c.has_last_checkpoint_step() || ck.step() > c.last_checkpoint_step())
    c.set_last_checkpoint_step(ck.step());
  store::Put(b, c);
  if (absl::Status s =
          events_.Add(b, c, pb::EVENT_KIND_CHECKPOINT_COMMITTED, pb::SEVERITY_INFO,
                      Cat("checkpoint step ", ck.step(), " committed (", ck.world_size(),
                          " shards, ", ck.total_bytes(), " bytes) in ", ck.dir()),
                      attempt);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
  out.committed = true;
  // Then the manifest beside the shards (a failure here is made good before a resume).
  if (absl::Status s = files_.WriteManifest(ck, *manifest, c.owner_uid()); !s.ok()) {
    WriteBatch w;
    if (absl::Status e =
            events_.Add(w, c, pb::EVENT_KIND_CHECKPOINT_SAVE_FAILED, pb::SEVERITY_WARNING,
                        Cat("manifest.json of checkpoint step ", ck.step(),
                            " not written: ", s.message(), "; it is written again before a resume"),
                        attempt);
        e.ok()) {
      store_.Write(w, Durability::kBuffered).IgnoreError();
    }
  }
  if (absl::Status s = ApplyRetention(c, spec, attempt); !s.ok()) return s;
  return out;
}

absl::Status CheckpointKeeper::ApplyRetention(const pb::Campaign& c, const CheckpointSpec& spec,
                                              int32_t attempt) {
  absl::StatusOr<std::vector<pb::Checkpoint>> all = store::ListCheckpoints(store_, c.id());
  if (!all.ok()) return all.status();
  std::vector<int64_t> protect;
  if (c.has_last_good_checkpoint_step()) protect.push_back(c.last_good_checkpoint_step());
  const std::vector<int64_t> doomed =
      PlanRetention(*all, {spec.keep_last, spec.keep_every}, protect);
  if (doomed.empty()) return absl::OkStatus();
  // The catalog first (synced), then the files: a crash in between leaves directories the
  // next attempt's start removes, never a record pointing at deleted files.
  WriteBatch b;
  std::string steps;
  for (pb::Checkpoint& ck : *all) {
    if (std::find(doomed.begin(), doomed.end(), ck.step()) == doomed.end()) continue;
    ck.set_state(pb::CHECKPOINT_STATE_DELETED);
    ck.set_state_message(
        Cat("retention (keep_last ", spec.keep_last, ", keep_every ", spec.keep_every, ")"));
    store::Put(b, ck);
    steps += Cat(steps.empty() ? "" : ", ", ck.step());
  }
  if (absl::Status s =
          events_.Add(b, c, pb::EVENT_KIND_CHECKPOINT_DELETED, pb::SEVERITY_INFO,
                      Cat("retention (keep_last ", spec.keep_last, ", keep_every ", spec.keep_every,
                          ") deletes checkpoint step", doomed.size() > 1 ? "s " : " ", steps),
                      attempt);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
  // (Steps left behind here are DELETED in the catalog: RemoveUncommittedSteps takes them
  // before the next attempt.)
  for (int64_t step : doomed) {
    if (absl::Status s = files_.DeleteStep(spec.dir, c.id(), step, c.owner_uid()); !s.ok()) {
      spdlog::warn("campaign {}: retention could not delete step {}: {}", c.id(), step,
                   std::string(s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckpointKeeper::MarkGood(WriteBatch& b, pb::Campaign& c, int64_t healthy_steps,
                                        int32_t attempt) {
  c.set_last_good_checkpoint_step(c.last_checkpoint_step());
  absl::StatusOr<std::optional<pb::Checkpoint>> ck =
      store::GetCheckpoint(store_, c.id(), c.last_checkpoint_step());
  if (!ck.ok()) return ck.status();
  if (ck->has_value()) {
    (*ck)->set_good(true);
    store::Put(b, **ck);
  }
  return events_.Add(b, c, pb::EVENT_KIND_CHECKPOINT_GOOD, pb::SEVERITY_INFO,
                     Cat("checkpoint step ", c.last_checkpoint_step(), " is good (", healthy_steps,
                         " healthy steps after it)"),
                     attempt);
}

std::optional<std::string> CheckpointKeeper::VerifyOf(const pb::Checkpoint& ck, uint32_t owner) {
  auto verify = [ck, owner, &files = files_]() -> std::optional<std::string> {
    absl::StatusOr<std::string> problem = files.Verify(ck, owner);
    if (absl::IsUnavailable(problem.status())) return std::nullopt;
    if (!problem.ok()) {
      return Cat("its shards cannot be read as the campaign's owner: ", problem.status().message());
    }
    return std::move(*problem);
  };
  if (!verify_in_background_) return verify();
  MutexLock lock(&mu_);
  const auto key = std::make_pair(ck.campaign_id(), ck.step());
  auto it = verifying_.find(key);
  if (it == verifying_.end()) {
    // A copy of the record: the thread reads only files.
    it = verifying_.emplace(key, std::async(std::launch::async, verify).share()).first;
  }
  if (it->second.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    return std::nullopt;
  std::optional<std::string> problem = it->second.get();
  verifying_.erase(it);
  return problem;
}

absl::StatusOr<Resume> CheckpointKeeper::PrepareResume(const pb::Campaign& c, pb::Attempt& a,
                                                       WriteBatch& b) {
  if (a.has_start_checkpoint_step()) {
    absl::StatusOr<Resume> picked = PickResume(c, a, b);
    if (!picked.ok() || *picked == Resume::kPending) return picked;
  }
  if (absl::Status s = AbandonPendingSaves(c, b); !s.ok()) return s;
  return Resume::kReady;
}

absl::StatusOr<Resume> CheckpointKeeper::PickResume(const pb::Campaign& c, pb::Attempt& a,
                                                    WriteBatch& b) {
  absl::StatusOr<std::vector<pb::Checkpoint>> all = store::ListCheckpoints(store_, c.id());
  if (!all.ok()) return all.status();
  const int64_t wanted = a.start_checkpoint_step();
  for (auto it = all->rbegin(); it != all->rend(); ++it) {
    pb::Checkpoint& ck = *it;
    if (ck.step() > wanted || ck.state() != pb::CHECKPOINT_STATE_COMMITTED) continue;
    // Without shard records (nothing to check) a checkpoint is taken as reported.
    const bool gone = ck.shards_size() > 0 && !ck.dir().empty() && !files_.Exists(ck.dir());
    std::string problem;
    if (!gone) {
      std::optional<std::string> verified = VerifyOf(ck, c.owner_uid());
      if (!verified) return Resume::kPending;
      problem = std::move(*verified);
    }
    if (!gone && problem.empty() && ck.shards_size() > 0 &&
        !files_.Exists(fs::path(ck.dir()) / ckpt::kManifestFileName)) {
      // Committed, but belayd stopped before it wrote the manifest (or the write failed):
      // the workers read the manifest, so it is written now.
      absl::StatusOr<ckpt::Manifest> m = BuildManifest(ck, c.id());
      absl::Status written = m.ok() ? files_.WriteManifest(ck, *m, c.owner_uid()) : m.status();
      if (absl::IsUnavailable(written)) return Resume::kPending;  // the owner's entry: later
      if (!written.ok()) problem = Cat("its manifest.json cannot be written: ", written.message());
    }
    if (!gone && problem.empty()) {
      if (ck.step() != wanted) {
        if (absl::Status s =
                events_.Add(b, c, pb::EVENT_KIND_ROLLBACK, pb::SEVERITY_WARNING,
                            Cat("attempt ", a.number(), " resumes from checkpoint step ", ck.step(),
                                " instead of ", wanted),
                            a.number());
            !s.ok()) {
          return s;
        }
      }
      a.set_start_checkpoint_step(ck.step());
      return Resume::kReady;
    }
    ck.set_state(gone ? pb::CHECKPOINT_STATE_DELETED : pb::CHECKPOINT_STATE_CORRUPT);
    ck.set_state_message(gone ? "its directory is gone" : problem);
    store::Put(b, ck);
    if (absl::Status s = events_.Add(
            b, c, gone ? pb::EVENT_KIND_CHECKPOINT_DELETED : pb::EVENT_KIND_CHECKPOINT_CORRUPT,
            gone ? pb::SEVERITY_INFO : pb::SEVERITY_WARNING,
            Cat("checkpoint step ", ck.step(), gone ? " was removed from disk" : " is corrupt: ",
                gone ? "" : problem, "; trying an older one"),
            a.number());
        !s.ok()) {
      return s;
    }
  }
  a.clear_start_checkpoint_step();
  if (absl::Status s = events_.Add(b, c, pb::EVENT_KIND_ROLLBACK, pb::SEVERITY_WARNING,
                                   Cat("no usable checkpoint at or before step ", wanted,
                                       ": attempt ", a.number(), " starts from step 0"),
                                   a.number());
      !s.ok()) {
    return s;
  }
  return Resume::kReady;
}

absl::Status CheckpointKeeper::GiveUp(WriteBatch& b, const pb::Campaign& c, pb::Checkpoint& ck,
                                      std::string why, int32_t attempt) {
  ck.set_state(pb::CHECKPOINT_STATE_DELETED);
  ck.set_state_message(std::move(why));
  store::Put(b, ck);
  return events_.Add(
      b, c, pb::EVENT_KIND_CHECKPOINT_DELETED, pb::SEVERITY_INFO,
      Cat("checkpoint step ", ck.step(), ": ", ck.state_message(), "; its files are removed"),
      attempt);
}

absl::Status CheckpointKeeper::AbandonAfter(WriteBatch& b, pb::Campaign& c, int64_t target,
                                            int32_t attempt) {
  absl::StatusOr<std::vector<pb::Checkpoint>> all = store::ListCheckpoints(store_, c.id());
  if (!all.ok()) return all.status();
  for (pb::Checkpoint& ck : *all) {
    if (ck.step() <= target || ck.state() != pb::CHECKPOINT_STATE_COMMITTED) continue;
    if (absl::Status s =
            GiveUp(b, c, ck, Cat("given up by the rollback to step ", std::max<int64_t>(target, 0)),
                   attempt);
        !s.ok()) {
      return s;
    }
  }
  if (target >= 0) {
    c.set_last_checkpoint_step(target);
  } else {
    c.clear_last_checkpoint_step();
  }
  return absl::OkStatus();
}

absl::Status CheckpointKeeper::AbandonPendingSaves(const pb::Campaign& c, WriteBatch& b) {
  absl::StatusOr<std::vector<pb::Checkpoint>> all = store::ListCheckpoints(store_, c.id());
  if (!all.ok()) return all.status();
  for (pb::Checkpoint& ck : *all) {
    if (ck.state() != pb::CHECKPOINT_STATE_PENDING) continue;
    if (absl::Status s = GiveUp(b, c, ck,
                                Cat("save of attempt ", ck.attempt_number(), " never completed (",
                                    ck.shards_size(), " of ", ck.world_size(), " shards reported)"),
                                ck.attempt_number());
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void CheckpointKeeper::RemoveUncommittedSteps(const pb::Campaign& c, const fs::path& root) {
  const std::string& id = c.id();
  if (root.empty()) return;
  // The catalog first: the store is not read with the owner's rights.
  absl::StatusOr<std::vector<pb::Checkpoint>> all = store::ListCheckpoints(store_, id);
  if (!all.ok()) return;
  std::map<int64_t, pb::CheckpointState> state;
  for (const pb::Checkpoint& ck : *all) state[ck.step()] = ck.state();
  absl::StatusOr<std::vector<int64_t>> steps = files_.TidyAndListSteps(root, id, c.owner_uid());
  if (!steps.ok()) {
    if (!absl::IsNotFound(steps.status())) {
      spdlog::warn("campaign {}: uncommitted steps not removed: {}", id,
                   std::string(steps.status().message()));
    }
    return;
  }
  for (int64_t step : *steps) {
    auto it = state.find(step);
    // Committed checkpoints stay, and corrupt ones for inspection; the rest never committed
    // (or were given up) in the catalog.
    if (it != state.end() && (it->second == pb::CHECKPOINT_STATE_COMMITTED ||
                              it->second == pb::CHECKPOINT_STATE_CORRUPT)) {
      continue;
    }
    if (absl::Status s = files_.DeleteStep(root, id, step, c.owner_uid()); !s.ok()) {
      spdlog::warn("campaign {}: removing uncommitted step {}: {}", id, step,
                   std::string(s.message()));
    } else {
      spdlog::info("campaign {}: removed uncommitted checkpoint step {}", id, step);
    }
  }
}

}  // namespace belay::checkpoints
