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
#include "common/durable_file.h"
#include "common/strings.h"

namespace belay::sched {

absl::StatusOr<std::optional<RunAs>> ResolveRunAs(const JobSpec& job) {
  if (!job.run_as_uid || *job.run_as_uid == ::geteuid()) return std::optional<RunAs>();
  const uint32_t uid = *job.run_as_uid;
  if (::geteuid() != 0) {
    return absl::PermissionDeniedError(Cat("belayd runs as uid ", ::geteuid(),
                                           ", not root: it cannot start ranks as uid ", uid,
                                           " (campaign ", job.campaign_id, ")"));
  }
  absl::StatusOr<RunAs> as = LookUpUser(uid, Cat("the owner of campaign ", job.campaign_id));
  if (!as.ok()) return as.status();
  return std::optional<RunAs>(*as);
}

absl::Status GiveDirectory(const std::filesystem::path& dir, const RunAs& as) {
  if (::fchownat(AT_FDCWD, dir.c_str(), static_cast<uid_t>(as.uid), static_cast<gid_t>(as.gid),
                 AT_SYMLINK_NOFOLLOW) != 0) {
    return absl::InternalError(
        Cat(dir.string(), ": cannot hand it to uid ", as.uid, ": ", std::strerror(errno)));
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
                        : std::find(groups.begin(), groups.end(), st.st_gid) != groups.end()
                            ? S_IXGRP
                            : S_IXOTH;
    if ((st.st_mode & need) == 0) {
      return absl::FailedPreconditionError(
          Cat("user ", as.name, " (uid ", as.uid, ") may not enter ", above.string(), " (mode ",
              absl::StrFormat("%04o", st.st_mode & 07777), ", owner uid ", st.st_uid,
              "), so its ranks could not "
              "write their logs under ",
              abs.string(),
              "; let users through (chmod o+x) or put belayd's state "
              "directory elsewhere"));
    }
  }
  return absl::OkStatus();
}

absl::Status PrepareLogDirectory(const JobSpec& job, const std::optional<RunAs>& as) {
  const std::filesystem::path dir = std::filesystem::absolute(job.log_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir.parent_path(), ec);
  if (ec)
    return absl::InternalError(Cat(dir.parent_path().string(), ": cannot create: ", ec.message()));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(Cat(dir.string(), ": cannot create: ", std::strerror(errno)));
  }
  // An existing directory (a retried submission) is the same one, not a link planted there.
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return absl::InternalError(Cat(dir.string(), ": not a directory: ", std::strerror(errno)));
  const int rc = ::fchmod(fd, 0700);
  const int err = errno;
  ::close(fd);
  if (rc != 0)
    return absl::InternalError(Cat(dir.string(), ": cannot make it private: ", std::strerror(err)));
  for (const auto& [name, contents] : job.files) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      return absl::InvalidArgumentError(Cat("job file \"", name, "\": not a plain file name"));
    }
    // A fresh file renamed into place: a link the job's user left under that name is replaced,
    // never followed.
    absl::StatusOr<AtomicFile> file =
        AtomicFile::Create(dir / name, {.hidden_temp_name = true, .mode = 0644});
    if (!file.ok()) return file.status();
    if (absl::Status st = file->Append(contents); !st.ok()) return st;
    if (absl::Status st = file->Commit(); !st.ok()) return st;
  }
  if (as) return GiveDirectory(dir, *as);
  return absl::OkStatus();
}

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kEnded:
      return "ended";
    case JobState::kUnknown:
      return "unknown";
  }
  return "?";
}

}  // namespace belay::sched
