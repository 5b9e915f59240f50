// Checkpoint directory layout: names, committing, listing, crash clean-up and retention.
#include "common/ckpt/layout.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/ckpt/test_dir.h"

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

void Touch(const fs::path& p, const std::string& content = "x") {
  std::ofstream(p, std::ios::binary) << content;
}

class LayoutTest : public TempDirTest {
 protected:
  // A committed step as standalone mode leaves it.
  void Commit(int64_t step) {
    absl::StatusOr<fs::path> tmp = BeginStep(dir(), "camp", step);
    ASSERT_TRUE(tmp.ok()) << tmp.status();
    Touch(*tmp / ShardFileName(0));
    Touch(*tmp / kManifestFileName, "{}");
    ASSERT_TRUE(CommitStep(dir(), "camp", step).ok());
  }

  std::vector<int64_t> Steps() {
    absl::StatusOr<std::vector<int64_t>> s = ListCommittedSteps(dir(), "camp");
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : std::vector<int64_t>{};
  }
};

TEST(LayoutNames, AreZeroPaddedAndParseBackExactly) {
  EXPECT_EQ(StepDirName(1200), "step_000001200");
  EXPECT_EQ(StepDirName(0), "step_000000000");
  EXPECT_EQ(StepDirName(1234567890), "step_1234567890");
  EXPECT_EQ(ShardFileName(3), "rank_00003.bin");
  EXPECT_EQ(StepDir("/ck", "run1", 7), fs::path("/ck/run1/step_000000007"));
  EXPECT_EQ(StepTempDir("/ck", "run1", 7), fs::path("/ck/run1/step_000000007.tmp"));

  EXPECT_EQ(ParseStepDirName("step_000001200"), 1200);
  EXPECT_EQ(ParseStepDirName("step_1234567890"), 1234567890);
  for (const char* junk :
       {"step_1200", "step_0000001200", "step_000001200.tmp", "step_-00000001", "step_00000120x",
        "Step_000001200", "step_", "", "step_99999999999999999999"}) {
    EXPECT_EQ(ParseStepDirName(junk), std::nullopt) << junk;
  }
}

TEST(LayoutNames, CampaignMustBeOneDirectoryName) {
  EXPECT_TRUE(ValidateCampaignName("gpt2-124m_v1.2").ok());
  for (const std::string& bad :
       std::vector<std::string>{"", ".", "..", "a/b", std::string("a\0b", 3)}) {
    EXPECT_EQ(ValidateCampaignName(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ListCommittedSteps("/tmp", "../x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LayoutTest, MissingCampaignHasNoSteps) { EXPECT_THAT(Steps(), IsEmpty()); }

TEST_F(LayoutTest, StepIsInvisibleUntilCommitted) {
  absl::StatusOr<fs::path> tmp = BeginStep(dir(), "camp", 100);
  ASSERT_TRUE(tmp.ok()) << tmp.status();
  EXPECT_EQ(*tmp, StepTempDir(dir(), "camp", 100));
  Touch(*tmp / ShardFileName(0));
  EXPECT_THAT(Steps(), IsEmpty());

  EXPECT_EQ(CommitStep(dir(), "camp", 100).code(), absl::StatusCode::kFailedPrecondition);
  Touch(*tmp / kManifestFileName, "{}");
  ASSERT_TRUE(CommitStep(dir(), "camp", 100).ok());
  EXPECT_THAT(Steps(), ElementsAre(100));
  EXPECT_FALSE(fs::exists(*tmp));
  EXPECT_TRUE(fs::exists(StepDir(dir(), "camp", 100) / ShardFileName(0)));

  EXPECT_EQ(BeginStep(dir(), "camp", 100).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(CommitStep(dir(), "camp", 101).code(), absl::StatusCode::kNotFound);
}

TEST_F(LayoutTest, BeginStepDiscardsWhatACrashedTryLeft) {
  ASSERT_TRUE(fs::create_directories(StepTempDir(dir(), "camp", 5)));
  Touch(StepTempDir(dir(), "camp", 5) / "rank_00000.bin");
  absl::StatusOr<fs::path> tmp = BeginStep(dir(), "camp", 5);
  ASSERT_TRUE(tmp.ok()) << tmp.status();
  EXPECT_TRUE(fs::is_empty(*tmp));
}

TEST_F(LayoutTest, PrepareStepDirGivesAnEmptyStepDirectoryReplacingAnOldOne) {
  ASSERT_TRUE(PrepareStepDir(dir(), "camp", 7).ok());
  EXPECT_TRUE(fs::is_empty(StepDir(dir(), "camp", 7)));
  Commit(8);  // an earlier attempt's committed save of step 8
  ASSERT_TRUE(fs::exists(StepDir(dir(), "camp", 8) / kManifestFileName));
  ASSERT_TRUE(PrepareStepDir(dir(), "camp", 8).ok());
  EXPECT_TRUE(fs::is_empty(StepDir(dir(), "camp", 8)));
  EXPECT_FALSE(fs::exists(CampaignDir(dir(), "camp") / "step_000000008.trash"));
  EXPECT_EQ(PrepareStepDir(dir(), "../x", 8).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LayoutTest, ListingSkipsTemporaryJunkAndManifestlessDirectories) {
  Commit(300);
  Commit(20);
  Commit(1000000000);
  const fs::path camp = CampaignDir(dir(), "camp");
  ASSERT_TRUE(fs::create_directories(camp / "step_000000400.tmp"));
  Touch(camp / "step_000000400.tmp" / kManifestFileName);
  ASSERT_TRUE(fs::create_directories(camp / "step_000000500"));  // no manifest yet
  ASSERT_TRUE(fs::create_directories(camp / "step_600"));
  Touch(camp / "step_600" / kManifestFileName);
  Touch(camp / "step_000000700");  // a file, not a directory
  ASSERT_TRUE(fs::create_directories(camp / "notes"));
  EXPECT_THAT(Steps(), ElementsAre(20, 300, 1000000000));
}

TEST_F(LayoutTest, RemoveIncompleteDeletesOnlyTemporaryNames) {
  Commit(10);
  const fs::path camp = CampaignDir(dir(), "camp");
  const fs::path step = StepDir(dir(), "camp", 10);
  ASSERT_TRUE(fs::create_directories(camp / "step_000000020.tmp"));
  Touch(camp / "step_000000020.tmp" / "rank_00000.bin");
  ASSERT_TRUE(fs::create_directories(camp / "step_000000005.trash"));
  Touch(step / "rank_00001.bin.0123456789abcdef.tmp");
  Touch(step / "manifest.json.fedcba9876543210.tmp");
  ASSERT_TRUE(fs::create_directories(camp / "step_000000030"));  // manifest-less: kept
  Touch(camp / "step_000000030" / "rank_00000.bin");
  Touch(camp / "README");

  absl::StatusOr<std::vector<fs::path>> removed = RemoveIncomplete(dir(), "camp");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(
      *removed,
      ElementsAre(camp / "step_000000005.trash", step / "manifest.json.fedcba9876543210.tmp",
                  step / "rank_00001.bin.0123456789abcdef.tmp", camp / "step_000000020.tmp"));
  for (const fs::path& p : *removed) EXPECT_FALSE(fs::exists(p)) << p;
  EXPECT_TRUE(fs::exists(step / ShardFileName(0)));
  EXPECT_TRUE(fs::exists(step / kManifestFileName));
  EXPECT_TRUE(fs::exists(camp / "step_000000030" / "rank_00000.bin"));
  EXPECT_TRUE(fs::exists(camp / "README"));
  EXPECT_THAT(Steps(), ElementsAre(10));

  removed = RemoveIncomplete(dir(), "camp");
  ASSERT_TRUE(removed.ok());
  EXPECT_THAT(*removed, IsEmpty());
  removed = RemoveIncomplete(dir(), "no-such-campaign");
  ASSERT_TRUE(removed.ok());
  EXPECT_THAT(*removed, IsEmpty());
}

TEST_F(LayoutTest, RetentionKeepsLastEveryAndProtected) {
  for (int64_t s : {100, 200, 300, 400, 500, 600, 700}) Commit(s);
  // Keep the newest 2 (600, 700), multiples of 300 (300, 600) and the protected 200.
  absl::StatusOr<std::vector<int64_t>> deleted = ApplyRetention(dir(), "camp", 2, 300, 200);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_THAT(*deleted, ElementsAre(100, 400, 500));
  EXPECT_THAT(Steps(), ElementsAre(200, 300, 600, 700));
  for (const auto& e : fs::directory_iterator(CampaignDir(dir(), "camp"))) {
    EXPECT_EQ(ParseStepDirName(e.path().filename().string()).has_value(), true) << e.path();
  }
}

TEST_F(LayoutTest, RetentionNeverDeletesTheProtectedStep) {
  for (int64_t s : {1, 2, 3}) Commit(s);
  absl::StatusOr<std::vector<int64_t>> deleted = ApplyRetention(dir(), "camp", 0, 0, 1);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_THAT(*deleted, ElementsAre(2, 3));
  EXPECT_THAT(Steps(), ElementsAre(1));

  deleted = ApplyRetention(dir(), "camp", 0, 0, std::nullopt);
  ASSERT_TRUE(deleted.ok());
  EXPECT_THAT(*deleted, ElementsAre(1));
  EXPECT_THAT(Steps(), IsEmpty());
}

TEST_F(LayoutTest, RetentionKeepsEverythingWhenKeepLastCoversAll) {
  for (int64_t s : {10, 20}) Commit(s);
  absl::StatusOr<std::vector<int64_t>> deleted = ApplyRetention(dir(), "camp", 5, 0, 20);
  ASSERT_TRUE(deleted.ok());
  EXPECT_THAT(*deleted, IsEmpty());
  EXPECT_THAT(Steps(), ElementsAre(10, 20));
  EXPECT_EQ(ApplyRetention(dir(), "camp", -1, 0, std::nullopt).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LayoutTest, RetentionIgnoresUncommittedSteps) {
  Commit(1);
  Commit(2);
  ASSERT_TRUE(fs::create_directories(CampaignDir(dir(), "camp") / "step_000000000"));
  absl::StatusOr<fs::path> tmp = BeginStep(dir(), "camp", 3);
  ASSERT_TRUE(tmp.ok());
  absl::StatusOr<std::vector<int64_t>> deleted = ApplyRetention(dir(), "camp", 1, 0, 2);
  ASSERT_TRUE(deleted.ok());
  EXPECT_THAT(*deleted, ElementsAre(1));
  EXPECT_TRUE(fs::exists(CampaignDir(dir(), "camp") / "step_000000000"));
  EXPECT_TRUE(fs::exists(*tmp));
}

}  // namespace
}  // namespace belay::ckpt
