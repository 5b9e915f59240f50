// DiskCheckpointFiles: the checkpoint directories, touched with the owner's rights.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <memory>

#include "common/ckpt/layout.h"
#include "common/strings.h"
#include "daemon/checkpoints/catalog.h"
#include "daemon/checkpoints/checkpoint_files.h"
#include "daemon/scheduler/identity.h"
#include "spdlog/spdlog.h"

namespace belay::checkpoints {
namespace {

namespace fs = std::filesystem;

// Whether belayd may write or delete in `dir`: a directory itself (not a symlink to somewhere
// else) of the campaign's owner or of belayd.
absl::Status OwnersDirectory(const fs::path& dir, uint32_t owner) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(Cat(dir.string(), ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        Cat(dir.string(), " is not a directory (a symlink?): not touched"));
  }
  if (st.st_uid != owner && st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(
        Cat(dir.string(), " belongs to uid ", st.st_uid,
            ", neither the campaign's owner nor belayd: not touched"));
  }
  return absl::OkStatus();
}

// File access with the rights of campaign `campaign`'s owner on this thread while the
// result lives (`as_owner`), else with belayd's own. Unavailable when the user database does
// not answer.
absl::StatusOr<std::unique_ptr<sched::FilesystemIdentity>> OwnersFileAccess(
    uint32_t owner, const std::string& campaign, bool as_owner) {
  return sched::FilesystemIdentity::Assume(as_owner ? owner : static_cast<uint32_t>(::geteuid()),
                                           Cat("the owner of campaign ", campaign));
}

// belayd's way into directories of a campaign's checkpoints: each of `dirs` must be
// OwnersDirectory, then file access takes the owner's rights while the result lives.
absl::StatusOr<std::unique_ptr<sched::FilesystemIdentity>> EnterOwnersDirectories(
    std::initializer_list<fs::path> dirs, uint32_t owner, const std::string& campaign,
    bool as_owner) {
  for (const fs::path& d : dirs) {
    if (absl::Status s = OwnersDirectory(d, owner); !s.ok()) return s;
  }
  return OwnersFileAccess(owner, campaign, as_owner);
}

}  // namespace

bool DiskCheckpointFiles::Exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec) || ec;
}

absl::StatusOr<std::string> DiskCheckpointFiles::Verify(const pb::Checkpoint& ck, uint32_t owner) {
  // The ranks wrote the shards as the owner: a shard path that leads elsewhere cannot make
  // belayd read what the owner may not.
  absl::StatusOr<std::unique_ptr<sched::FilesystemIdentity>> id =
      OwnersFileAccess(owner, ck.campaign_id(), as_owner_);
  if (!id.ok()) return id.status();
  return VerifyShards(ck);
}

absl::Status DiskCheckpointFiles::WriteManifest(const pb::Checkpoint& ck, const ckpt::Manifest& m,
                                                uint32_t owner) {
  const fs::path step = ck.dir();
  absl::StatusOr<std::unique_ptr<sched::FilesystemIdentity>> id =
      EnterOwnersDirectories({step.parent_path(), step}, owner, ck.campaign_id(), as_owner_);
  if (!id.ok()) return id.status();
  return ckpt::WriteManifest(step, m);
}

absl::StatusOr<std::vector<int64_t>> DiskCheckpointFiles::TidyAndListSteps(
    const fs::path& root, const std::string& campaign, uint32_t owner) {
  absl::StatusOr<std::unique_ptr<sched::FilesystemIdentity>> id =
      EnterOwnersDirectories({ckpt::CampaignDir(root, campaign)}, owner, campaign, as_owner_);
  if (!id.ok()) return id.status();
  absl::StatusOr<std::vector<fs::path>> leftovers = ckpt::RemoveIncomplete(root, campaign);
  if (!leftovers.ok()) {
    spdlog::warn("campaign {}: {}", campaign, std::string(leftovers.status().message()));
  }
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const fs::directory_entry& e :
       fs::directory_iterator(ckpt::CampaignDir(root, campaign), ec)) {
    if (std::optional<int64_t> step = ckpt::ParseStepDirName(e.path().filename().string())) {
      steps.push_back(*step);
    }
  }
  return steps;
}

absl::Status DiskCheckpointFiles::DeleteStep(const fs::path& root, const std::string& campaign,
                                             int64_t step, uint32_t owner) {
  absl::StatusOr<std::unique_ptr<sched::FilesystemIdentity>> id =
      EnterOwnersDirectories({ckpt::CampaignDir(root, campaign)}, owner, campaign, as_owner_);
  if (!id.ok()) return id.status();
  return ckpt::DeleteStep(root, campaign, step);
}

}  // namespace belay::checkpoints
