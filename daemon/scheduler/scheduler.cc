// Names of scheduler states, for messages; whom a job runs as.
#include "daemon/scheduler/scheduler.h"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

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
  const int rc = ::getpwuid_r(static_cast<uid_t>(uid), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    return absl::FailedPreconditionError(Cat("uid ", uid, ", the owner of campaign ", job.campaign_id,
                                             ", has no passwd entry on this machine",
                                             rc != 0 ? Cat(" (", std::strerror(rc), ")") : ""));
  }
  RunAs as;
  as.uid = uid;
  as.gid = static_cast<uint32_t>(pw.pw_gid);
  as.name = pw.pw_name != nullptr ? pw.pw_name : "";
  as.home = pw.pw_dir != nullptr ? pw.pw_dir : "/";
  return std::optional<RunAs>(as);
}

absl::Status GiveDirectory(const std::filesystem::path& dir, const RunAs& as) {
  if (::chown(dir.c_str(), static_cast<uid_t>(as.uid), static_cast<gid_t>(as.gid)) != 0) {
    return absl::InternalError(Cat(dir.string(), ": cannot hand it to uid ", as.uid, ": ", std::strerror(errno)));
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
