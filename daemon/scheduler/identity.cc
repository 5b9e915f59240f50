// Users belayd acts for: passwd lookups and per-thread filesystem credentials.
#include "daemon/scheduler/identity.h"

#include <grp.h>
#include <pwd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/strings.h"
#include "spdlog/spdlog.h"

namespace belay::sched {
namespace {

// The calling thread's filesystem uid/gid, set by the system calls (per thread). setfsuid
// and setfsgid return the previous value and report no error: the caller reads the value
// back (an argument of -1 changes nothing).
uid_t SetThreadFsuid(uid_t uid) { return static_cast<uid_t>(::syscall(SYS_setfsuid, uid)); }
gid_t SetThreadFsgid(gid_t gid) { return static_cast<gid_t>(::syscall(SYS_setfsgid, gid)); }
uid_t ThreadFsuid() { return SetThreadFsuid(static_cast<uid_t>(-1)); }
gid_t ThreadFsgid() { return SetThreadFsgid(static_cast<gid_t>(-1)); }
int SetThreadGroups(const std::vector<gid_t>& groups) {
  return static_cast<int>(::syscall(SYS_setgroups, groups.size(), groups.data()));
}

}  // namespace

absl::StatusOr<RunAs> LookUpUser(uint32_t uid, std::string_view whose) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  int rc = 0;
  while ((rc = ::getpwuid_r(static_cast<uid_t>(uid), &pw, buf.data(), buf.size(), &found)) ==
             ERANGE &&
         buf.size() < (1u << 22)) {
    buf.resize(buf.size() * 4);
  }
  if (rc != 0) {
    // The user database did not answer (NSS, LDAP): try again later, not a refusal.
    return absl::UnavailableError(
        Cat("looking up uid ", uid, ", ", whose, ": ", std::strerror(rc)));
  }
  if (found == nullptr) {
    return absl::FailedPreconditionError(
        Cat("uid ", uid, ", ", whose, ", has no passwd entry on this machine"));
  }
  RunAs as;
  as.uid = uid;
  as.gid = static_cast<uint32_t>(pw.pw_gid);
  as.name = pw.pw_name != nullptr ? pw.pw_name : "";
  as.home = pw.pw_dir != nullptr ? pw.pw_dir : "/";
  return as;
}

std::vector<gid_t> GroupsOf(const RunAs& as) {
  std::vector<gid_t> groups(64);
  int n = static_cast<int>(groups.size());
  while (::getgrouplist(as.name.c_str(), static_cast<gid_t>(as.gid), groups.data(), &n) < 0 &&
         n > 0 && static_cast<size_t>(n) > groups.size()) {
    groups.resize(static_cast<size_t>(n));
  }
  groups.resize(static_cast<size_t>(std::max(n, 0)));
  if (std::find(groups.begin(), groups.end(), static_cast<gid_t>(as.gid)) == groups.end()) {
    groups.push_back(static_cast<gid_t>(as.gid));
  }
  return groups;
}

absl::StatusOr<std::unique_ptr<FilesystemIdentity>> FilesystemIdentity::Assume(
    uint32_t uid, std::string_view whose) {
  if (uid == ::geteuid()) return std::unique_ptr<FilesystemIdentity>(new FilesystemIdentity());
  absl::StatusOr<RunAs> as = LookUpUser(uid, whose);
  if (!as.ok()) return as.status();
  return Assume(*as);
}

absl::StatusOr<std::unique_ptr<FilesystemIdentity>> FilesystemIdentity::Assume(const RunAs& as) {
  std::unique_ptr<FilesystemIdentity> id(new FilesystemIdentity());
  if (as.uid == ::geteuid()) return id;
  if (::geteuid() != 0) {
    return absl::PermissionDeniedError(
        Cat("belayd runs as uid ", ::geteuid(), ", not root: it cannot act as uid ", as.uid));
  }
  // What to restore: this thread's groups and filesystem ids.
  const int n = ::getgroups(0, nullptr);
  if (n < 0) return absl::InternalError(Cat("getgroups: ", std::strerror(errno)));
  id->groups_.resize(static_cast<size_t>(n));
  if (n > 0 && ::getgroups(n, id->groups_.data()) != n) {
    return absl::InternalError(Cat("getgroups: ", std::strerror(errno)));
  }
  id->fsuid_ = ThreadFsuid();
  id->fsgid_ = ThreadFsgid();
  id->changed_ = true;  // from here on the destructor restores
  // Groups and gid first, while the filesystem uid is still root's.
  if (SetThreadGroups(GroupsOf(as)) != 0) {
    return absl::InternalError(Cat("setgroups for uid ", as.uid, ": ", std::strerror(errno)));
  }
  SetThreadFsgid(static_cast<gid_t>(as.gid));
  SetThreadFsuid(static_cast<uid_t>(as.uid));
  if (ThreadFsgid() != static_cast<gid_t>(as.gid) || ThreadFsuid() != static_cast<uid_t>(as.uid)) {
    return absl::InternalError(
        Cat("cannot take uid ", as.uid, " and gid ", as.gid, " for file access"));
  }
  return id;
}

FilesystemIdentity::~FilesystemIdentity() {
  if (!changed_) return;
  SetThreadFsuid(fsuid_);
  SetThreadFsgid(fsgid_);
  const bool groups = SetThreadGroups(groups_) == 0;
  if (ThreadFsuid() != fsuid_ || ThreadFsgid() != fsgid_ || !groups) {
    // A thread of belayd left with another user's rights would write belayd's own files as
    // that user: stop rather than go on.
    spdlog::critical("cannot restore belayd's file access credentials on this thread; stopping");
    std::abort();
  }
}

}  // namespace belay::sched
