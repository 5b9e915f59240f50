// Users belayd acts for: a campaign's owner as a passwd entry, and file access with that
// user's rights on one thread (a root belayd's housekeeping in directories the owner's ranks
// write to).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace belay::sched {

// A user as a job runs as: what the passwd entry of its uid says.
struct RunAs {
  uint32_t uid = 0;
  uint32_t gid = 0;  // primary group
  std::string name;
  std::string home;
};

// The passwd entry of `uid`; `whose` says in messages what the user is to belayd ("the
// owner of campaign x"). FailedPrecondition without an entry; Unavailable when the user
// database does not answer (NSS, LDAP: worth trying again).
absl::StatusOr<RunAs> LookUpUser(uint32_t uid, std::string_view whose);

// The groups of `as`: its supplementary groups and its primary group.
std::vector<gid_t> GroupsOf(const RunAs& as);

// File access as user `as` on the calling thread, for as long as the object lives: the
// thread's filesystem uid and gid become the user's and its supplementary groups the
// user's groups, so permissions are checked as for that user, a symlink the user planted
// leads nowhere the user could not go, and files created meanwhile belong to the user.
// Linux keeps these credentials per thread when they are set through the system calls
// themselves (glibc's wrappers would change every thread of belayd); other threads are not
// affected. Needs belayd to run as root; a no-op for belayd's own uid. Keep the scope to
// the file operations: belayd's own files (its store) are not to be touched in it.
class FilesystemIdentity {
 public:
  static absl::StatusOr<std::unique_ptr<FilesystemIdentity>> Assume(const RunAs& as);
  // Looks the user up first (LookUpUser's errors).
  static absl::StatusOr<std::unique_ptr<FilesystemIdentity>> Assume(uint32_t uid,
                                                                    std::string_view whose);
  ~FilesystemIdentity();  // back to belayd's own credentials

  FilesystemIdentity(const FilesystemIdentity&) = delete;
  FilesystemIdentity& operator=(const FilesystemIdentity&) = delete;

 private:
  FilesystemIdentity() = default;
  bool changed_ = false;
  uid_t fsuid_ = 0;
  gid_t fsgid_ = 0;
  std::vector<gid_t> groups_;
};

}  // namespace belay::sched
