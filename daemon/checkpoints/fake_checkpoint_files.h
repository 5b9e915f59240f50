// Checkpoint files in memory for the keeper's tests: step directories the test puts there,
// and faults by flag (a shard that fails its checksum, an owner whose user entry does not
// answer, a manifest or a delete that fails, a hash that takes until the test lets it end).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "daemon/checkpoints/checkpoint_files.h"

namespace belay::checkpoints {

// For tests: rank `rank`'s report of its shard of `step` of a checkpoint saved by two ranks,
// of one 10-element f32 tensor "w" of which each rank holds half (rank r elements 5r..5r+4),
// in the file `path` of `bytes` bytes with xxh3 `xxh3`.
pb::CheckpointShard HalfOfTensorW(int64_t step, int rank, const std::string& path, int64_t bytes,
                                  uint64_t xxh3);

class FakeCheckpointFiles final : public CheckpointFiles {
 public:
  // The directory of `step` of `campaign` under `root`, with shards that verify.
  void AddStep(const std::filesystem::path& root, const std::string& campaign, int64_t step);
  // Verify of the checkpoint in `dir` finds `problem` (a bad checksum, a missing shard).
  void SetProblem(const std::filesystem::path& dir, std::string problem);
  // Verify returns `status` (Unavailable: the owner's user entry does not answer).
  void FailVerify(absl::Status status);
  void FailManifest(absl::Status status);
  // DeleteStep of `step` fails (as a directory that is not the owner's would).
  void FailDelete(int64_t step);
  // While held, Verify waits (a background hash still running).
  void HoldVerify(bool hold);

  bool Exists(const std::filesystem::path& path) override;
  absl::StatusOr<std::string> Verify(const pb::Checkpoint& ck, uint32_t owner) override;
  absl::Status WriteManifest(const pb::Checkpoint& ck, const ckpt::Manifest& m,
                             uint32_t owner) override;
  absl::StatusOr<std::vector<int64_t>> TidyAndListSteps(const std::filesystem::path& root,
                                                        const std::string& campaign,
                                                        uint32_t owner) override;
  absl::Status DeleteStep(const std::filesystem::path& root, const std::string& campaign,
                          int64_t step, uint32_t owner) override;

  // What was done: Verify calls, and the manifests written by step directory.
  int verified() const;
  std::map<std::filesystem::path, ckpt::Manifest> manifests() const;

 private:
  mutable Mutex mu_;
  std::set<std::filesystem::path> paths_ ABSL_GUARDED_BY(mu_);
  std::map<std::filesystem::path, std::string> problems_ ABSL_GUARDED_BY(mu_);
  absl::Status verify_error_ ABSL_GUARDED_BY(mu_);
  absl::Status manifest_error_ ABSL_GUARDED_BY(mu_);
  std::set<int64_t> undeletable_ ABSL_GUARDED_BY(mu_);
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  CondVar hold_changed_;
  int verified_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::filesystem::path, ckpt::Manifest> manifests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace belay::checkpoints
