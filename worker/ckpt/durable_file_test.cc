// AtomicFile: a file appears under its final name complete, or not at all.
#include "worker/ckpt/durable_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "worker/ckpt/test_dir.h"

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

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

using AtomicFileTest = TempDirTest;

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

TEST_F(AtomicFileTest, SyncDirectoryReportsAMissingDirectory) {
  EXPECT_TRUE(SyncDirectory(dir()).ok());
  EXPECT_EQ(SyncDirectory(dir() / "nope").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace belay::ckpt
