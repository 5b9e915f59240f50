// The checkpoint files as the keeper sees them: what it asks of the directories a campaign's
// ranks write their checkpoints into. The real one (DiskCheckpointFiles) reads and deletes
// there with the rights of the campaign's owner; tests use FakeCheckpointFiles, which can
// fail any of it on purpose.
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

// Every method may be called from several threads at once (hashes run in the background).
// `owner` is the uid of the campaign's owner; the errors a method returns for a user
// database that does not answer are Unavailable (worth trying again later).
class CheckpointFiles {
 public:
  virtual ~CheckpointFiles() = default;

  // Whether `path` names a file or directory (symlinks followed). One that cannot be looked
  // at counts as there: what is read from it next says what is wrong.
  virtual bool Exists(const std::filesystem::path& path) = 0;
  // VerifyShards of `ck` (its first problem, or empty), its shards read as `owner`.
  virtual absl::StatusOr<std::string> Verify(const pb::Checkpoint& ck, uint32_t owner) = 0;
  // manifest.json beside the shards of `ck`, written as `owner`.
  virtual absl::Status WriteManifest(const pb::Checkpoint& ck, const ckpt::Manifest& m,
                                     uint32_t owner) = 0;
  // What the campaign's ranks left half-written under `root` goes, then the steps whose
  // directories are there. NotFound when the campaign has no directory under `root`.
  virtual absl::StatusOr<std::vector<int64_t>> TidyAndListSteps(const std::filesystem::path& root,
                                                                const std::string& campaign,
                                                                uint32_t owner) = 0;
  // Removes the directory of `step` of `campaign` under `root`, as `owner`.
  virtual absl::Status DeleteStep(const std::filesystem::path& root, const std::string& campaign,
                                  int64_t step, uint32_t owner) = 0;
};

// The checkpoint directories on this machine's file systems. Nothing is written or deleted in
// a directory that is a symlink or belongs to neither the owner nor belayd (the ranks run as
// the owner, who could otherwise point belayd, as root, at other places). With `as_owner`
// (belayd runs the ranks as their owner) every file is touched with the owner's rights on
// the calling thread, so belayd reads and deletes only what the owner could; otherwise with
// belayd's own.
class DiskCheckpointFiles final : public CheckpointFiles {
 public:
  explicit DiskCheckpointFiles(bool as_owner) : as_owner_(as_owner) {}

  bool Exists(const std::filesystem::path& path) override;
  absl::StatusOr<std::string> Verify(const pb::Checkpoint& ck, uint32_t owner) override;
  absl::Status WriteManifest(const pb::Checkpoint& ck, const ckpt::Manifest& m,
                             uint32_t owner) override;
  absl::StatusOr<std::vector<int64_t>> TidyAndListSteps(const std::filesystem::path& root,
                                                        const std::string& campaign,
                                                        uint32_t owner) override;
  absl::Status DeleteStep(const std::filesystem::path& root, const std::string& campaign,
                          int64_t step, uint32_t owner) override;

 private:
  const bool as_owner_;
};

}  // namespace belay::checkpoints
