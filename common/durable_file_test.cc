// AtomicFile: a file appears under its final name complete, or not at all.
#include "common/durable_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace belay {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::span<const std::byte> Bytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> Names(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// A fresh directory per test under ::testing::TempDir(), removed afterwards.
class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("belay_durable_file_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

TEST_F(AtomicFileTest, NothingUnderFinalNameUntilCommit) {
  const fs::path p = dir() / "out.bin";
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(p);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(f->temp_path().filename().string(), ::testing::StartsWith("out.bin."));
  EXPECT_EQ(f->temp_path().extension(), kTempSuffix);
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(f->Append("head").ok());
  ASSERT_TRUE(f->Append(big).ok());  // past the buffer: written directly
  ASSERT_TRUE(f->Append("tail").ok());
  EXPECT_FALSE(fs::exists(p));
  EXPECT_EQ(f->bytes_appended(), big.size() + 8);
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_EQ(ReadAll(p), "head" + big + "tail");
  EXPECT_EQ(Names(dir()), std::vector<std::string>{"out.bin"});
}

TEST_F(AtomicFileTest, AbandonedFileLeavesNoTrace) {
  const fs::path p = dir() / "out.bin";
  {
    absl::StatusOr<AtomicFile> f = AtomicFile::Create(p);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->Append("partial").ok());
    AtomicFile moved = std::move(*f);  // the moved-from object must not unlink twice
  }
  EXPECT_TRUE(fs::is_empty(dir()));
}

TEST_F(AtomicFileTest, CommitReplacesAnExistingFile) {
  const fs::path p = dir() / "out.bin";
  std::ofstream(p) << "old";
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(p);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(f->Append("new").ok());
  EXPECT_EQ(ReadAll(p), "old");
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_EQ(ReadAll(p), "new");
}

TEST_F(AtomicFileTest, MissingDirectoryIsNotFound) {
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(dir() / "nope" / "out.bin");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("nope"));
}

TEST_F(AtomicFileTest, WriteErrorIsStickyAndRemovesTheTemporary) {
  const fs::path p = dir() / "out.bin";
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(p);
  ASSERT_TRUE(f.ok());
  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  absl::Status first = f->Append(std::string(2 << 20, 'x'));
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(first.ok());
  EXPECT_THAT(std::string(first.message()), HasSubstr(f->temp_path().string()));
  EXPECT_EQ(f->Append("more"), first);
  EXPECT_EQ(f->Commit(), first);
  EXPECT_TRUE(fs::is_empty(dir()));
}

TEST_F(AtomicFileTest, HiddenTempNameAndModeFollowOptions) {
  const fs::path p = dir() / "train_000001.bin";
  const mode_t old_umask = ::umask(022);
  absl::StatusOr<AtomicFile> f =
      AtomicFile::Create(p, AtomicFileOptions{.hidden_temp_name = true, .mode = 0640});
  ::umask(old_umask);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->temp_path().parent_path(), dir());
  EXPECT_THAT(f->temp_path().filename().string(), ::testing::StartsWith(".train_000001.bin."));
  EXPECT_EQ(f->temp_path().extension(), kTempSuffix);
  ASSERT_TRUE(f->Append("x").ok());
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_EQ(fs::status(p).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
}

TEST_F(AtomicFileTest, WriteAtOverwritesBufferedBytes) {
  const fs::path p = dir() / "out.bin";
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(p);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(f->Append("header:?? body").ok());
  ASSERT_TRUE(f->WriteAt(7, Bytes("42")).ok());
  ASSERT_TRUE(f->Append(" tail").ok());
  EXPECT_EQ(f->bytes_appended(), 19u) << "WriteAt does not grow the file";
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_EQ(ReadAll(p), "header:42 body tail");
}

TEST_F(AtomicFileTest, WriteAtReachesBytesAlreadyWrittenAndStillBuffered) {
  const fs::path p = dir() / "out.bin";
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(p);
  ASSERT_TRUE(f.ok());
  // Enough small appends to spill the buffer to the file more than once, so the range below
  // spans bytes on disk and bytes still buffered.
  std::string want;
  for (int i = 0; i < 3000; ++i) {
    std::string chunk(1000, static_cast<char>('a' + i % 26));
    ASSERT_TRUE(f->Append(chunk).ok());
    want += chunk;
  }
  ASSERT_TRUE(f->WriteAt(0, Bytes("HEAD")).ok());
  want.replace(0, 4, "HEAD");
  // A range over nearly everything covers the boundary between file and buffer, wherever it is.
  std::string patch(want.size() - 1000, '\0');
  for (size_t i = 0; i < patch.size(); ++i) patch[i] = static_cast<char>(i * 13 + 1);
  ASSERT_TRUE(f->WriteAt(500, Bytes(patch)).ok());
  want.replace(500, patch.size(), patch);
  ASSERT_TRUE(f->WriteAt(want.size() - 3, Bytes("END")).ok());
  want.replace(want.size() - 3, 3, "END");
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_EQ(ReadAll(p), want);
}

TEST_F(AtomicFileTest, WriteAtPastTheAppendedBytesIsOutOfRangeAndSticky) {
  const fs::path p = dir() / "out.bin";
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(p);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(f->Append("0123456789").ok());
  EXPECT_TRUE(f->WriteAt(10, {}).ok()) << "an empty range at the end is inside";
  absl::Status s = f->WriteAt(8, Bytes("abc"));
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr(f->temp_path().string()));
  EXPECT_EQ(f->WriteAt(0, Bytes("a")), s);
  EXPECT_EQ(f->Commit(), s);
  EXPECT_TRUE(fs::is_empty(dir()));
}

TEST_F(AtomicFileTest, WriteAtAnOffsetBeyondTheEndIsOutOfRange) {
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(dir() / "out.bin");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(f->Append("abc").ok());
  EXPECT_EQ(f->WriteAt(UINT64_MAX, Bytes("x")).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(AtomicFileTest, SyncDirectoryReportsAMissingDirectory) {
  EXPECT_TRUE(SyncDirectory(dir()).ok());
  EXPECT_EQ(SyncDirectory(dir() / "nope").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace belay
