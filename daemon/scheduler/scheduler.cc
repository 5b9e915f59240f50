// Names of scheduler states, for messages; whom a job runs as.
#include "daemon/scheduler/scheduler.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
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
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  int rc = 0;
  while ((rc = ::getpwuid_r(static_cast<uid_t>(uid), &pw, buf.data(), buf.size(), &found)) == ERANGE &&
         buf.size() < (1u << 22)) {
    buf.resize(buf.size() * 4);
  }
  if (rc != 0) {
    // The user database did not answer (NSS, LDAP): try again later, not a refusal.
    return absl::UnavailableError(Cat("looking up uid ", uid, ", the owner of campaign ", job.campaign_id, ": ",
                                      std::strerror(rc)));
  }
  if (found == nullptr) {
    return absl::FailedPreconditionError(Cat("uid ", uid, ", the owner of campaign ", job.campaign_id,
                                             ", has no passwd entry on this machine"));
  }
  RunAs as;
  as.uid = uid;
  as.gid = static_cast<uint32_t>(pw.pw_gid);
  as.name = pw.pw_name != nullptr ? pw.pw_name : "";
  as.home = pw.pw_dir != nullptr ? pw.pw_dir : "/";
  return std::optional<RunAs>(as);
}

absl::Status GiveDirectory(const std::filesystem::path& dir, const RunAs& as) {
  if (::fchownat(AT_FDCWD, dir.c_str(), static_cast<uid_t>(as.uid), static_cast<gid_t>(as.gid), AT_SYMLINK_NOFOLLOW) !=
      0) {
    return absl::InternalError(Cat(dir.string(), ": cannot hand it to uid ", as.uid, ": ", std::strerror(errno)));
  }
  // The user's groups, for the search permission of every directory above.
  std::vector<gid_t> groups(64);
  int n = static_cast<int>(groups.size());
  while (::getgrouplist(as.name.c_str(), static_cast<gid_t>(as.gid), groups.data(), &n) < 0 && n > 0 &&
         static_cast<size_t>(n) > groups.size()) {
    groups.resize(static_cast<size_t>(n));
  }
  groups.resize(static_cast<size_t>(std::max(n, 0)));
  groups.push_back(static_cast<gid_t>(as.gid));
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
