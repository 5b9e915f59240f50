// FilesystemIdentity: another user's file access on one thread, and back. The cases that
// change credentials need root and the user "nobody"; they skip otherwise.
#include "daemon/scheduler/identity.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace belay::sched {
namespace {

namespace fs = std::filesystem;

bool CanOpen(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) ::close(fd);
  return fd >= 0;
}

uid_t OwnerOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_uid;
}

class FilesystemIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nobody_ = ::getpwnam("nobody");
    if (::geteuid() != 0 || nobody_ == nullptr) GTEST_SKIP() << "needs root and a user \"nobody\"";
    dir_ = fs::temp_directory_path() / ("belay_identity_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "private");
    fs::create_directories(dir_ / "open");
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    fs::permissions(dir_ / "private", fs::perms::owner_all);
    fs::permissions(dir_ / "open", fs::perms::all | fs::perms::sticky_bit);
    std::ofstream(dir_ / "private" / "secret") << "root only";
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  const passwd* nobody_ = nullptr;
  fs::path dir_;
};

TEST_F(FilesystemIdentityTest, FilesAreAccessedAsTheUserOnThisThreadOnlyAndBelaydsRightsReturn) {
  const fs::path secret = dir_ / "private" / "secret";
  ASSERT_TRUE(CanOpen(secret));
  // A thread that was running before keeps belayd's rights meanwhile. (A thread started
  // inside the scope would inherit the user's: none is.)
  std::promise<void> assumed;
  std::promise<bool> other_read;
  std::thread other([&] {
    assumed.get_future().wait();
    other_read.set_value(CanOpen(secret));
  });
  {
    absl::StatusOr<std::unique_ptr<FilesystemIdentity>> as =
        FilesystemIdentity::Assume(nobody_->pw_uid, "a test user");
    assumed.set_value();
    EXPECT_TRUE(other_read.get_future().get());
    other.join();
    ASSERT_TRUE(as.ok()) << as.status();
    EXPECT_FALSE(CanOpen(secret));
    EXPECT_EQ(errno, EACCES);
    EXPECT_NE(::faccessat(AT_FDCWD, (dir_ / "private").c_str(), W_OK, AT_EACCESS), 0);
    EXPECT_EQ(::faccessat(AT_FDCWD, (dir_ / "open").c_str(), W_OK | X_OK, AT_EACCESS), 0);
    std::ofstream(dir_ / "open" / "made") << "by nobody";
    EXPECT_EQ(OwnerOf(dir_ / "open" / "made"), nobody_->pw_uid);
  }
  EXPECT_TRUE(CanOpen(secret));
  std::ofstream(dir_ / "open" / "after") << "by root";
  EXPECT_EQ(OwnerOf(dir_ / "open" / "after"), 0u);
  EXPECT_EQ(::faccessat(AT_FDCWD, (dir_ / "private").c_str(), W_OK, AT_EACCESS), 0);
}

TEST_F(FilesystemIdentityTest, BelaydsOwnUidChangesNothing) {
  absl::StatusOr<std::unique_ptr<FilesystemIdentity>> as =
      FilesystemIdentity::Assume(::geteuid(), "belayd");
  ASSERT_TRUE(as.ok()) << as.status();
  EXPECT_TRUE(CanOpen(dir_ / "private" / "secret"));
}

TEST(FilesystemIdentity, AUidWithoutAUserIsRefusedNamingIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  const uid_t ghost = 3999999;
  if (::getpwuid(ghost) != nullptr) GTEST_SKIP() << "uid " << ghost << " has a user here";
  absl::StatusOr<std::unique_ptr<FilesystemIdentity>> as =
      FilesystemIdentity::Assume(ghost, "the owner of campaign x");
  EXPECT_EQ(as.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(as.status().message().find("uid 3999999, the owner of campaign x, has no passwd entry"),
            std::string::npos)
      << as.status();
}

TEST(FilesystemIdentity, NotRootItCannotActAsAnotherUser) {
  if (::geteuid() == 0) GTEST_SKIP() << "runs as root";
  RunAs other;
  other.uid = ::geteuid() + 1;
  other.gid = ::getegid();
  EXPECT_EQ(FilesystemIdentity::Assume(other).status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(GroupsOf, HoldsThePrimaryGroup) {
  const passwd* me = ::getpwuid(::geteuid());
  ASSERT_NE(me, nullptr);
  absl::StatusOr<RunAs> as = LookUpUser(::geteuid(), "the test's user");
  ASSERT_TRUE(as.ok()) << as.status();
  EXPECT_EQ(as->name, me->pw_name);
  const std::vector<gid_t> groups = GroupsOf(*as);
  EXPECT_NE(std::find(groups.begin(), groups.end(), me->pw_gid), groups.end());
}

}  // namespace
}  // namespace belay::sched
