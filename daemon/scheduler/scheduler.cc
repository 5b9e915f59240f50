// Names of scheduler states, for messages; whom a job runs as (ResolveRunAs, GiveDirectory).
#include "daemon/scheduler/scheduler.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/strings.h"

namespace belay::sched {

absl::StatusOr<std::optional<RunAs>> ResolveRunAs(const JobSpec& job) {
  if (!job.run_as_uid || *job.run_as_uid == ::geteuid()) return std::optional<RunAs>();
  const uint32_t uid = *job.run_as_uid;
  if (::geteuid() != 0) {
    return absl::PermissionDeniedError(Cat("belayd runs as uid ", ::geteuid(), ", not root: it cannot start ranks as uid ",
                                           uid, " (campaign ", job.campaign_id, ")"));
  }
  absl::StatusOr<RunAs> as = LookUpUser(uid, Cat("the owner of campaign ", job.campaign_id));
  if (!as.ok()) return as.status();
  return std::optional<RunAs>(*as);
}

absl::Status GiveDirectory(const std::filesystem::path& dir, const RunAs& as) {
  if (::fchownat(AT_FDCWD, dir.c_str(), static_cast<uid_t>(as.uid), static_cast<gid_t>(as.gid), AT_SYMLINK_NOFOLLOW) !=
      0) {
    return absl::InternalError(Cat(dir.string(), ": cannot hand it to uid ", as.uid, ": ", std::strerror(errno)));
  }
  // The user's groups, for the search permission of every directory above.
  const std::vector<gid_t> groups = GroupsOf(as);
  const std::filesystem::path abs = std::filesystem::absolute(dir);
  std::filesystem::path above;
  for (const std::filesystem::path& part : abs.parent_path()) {
    above /= part;
    struct stat st {};
    if (::stat(above.c_str(), &st) != 0) continue;
    const mode_t need = st.st_uid == as.uid ? S_IXUSR
                        : std::find(groups.begin(), groups.end(), st.st_gid) != groups.end() ? S_IXGRP
                                                                                              : S_IXOTH;
    if ((st.st_mode & need) == 0) {
      return absl::FailedPreconditionError(
          Cat("user ", as.name, " (uid ", as.uid, ") may not enter ", above.string(), " (mode ",
              absl::StrFormat("%04o", st.st_mode & 07777), ", owner uid ", st.st_uid, "), so its ranks could not "
              "write their logs under ", abs.string(), "; let users through (chmod o+x) or put belayd's state "
              "directory elsewhere"));
    }
  }
  return absl::OkStatus();
}

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kEnded: return "ended";
    case JobState::kUnknown: return "unknown";
  }
  return "?";
}

}  // namespace belay::sched
