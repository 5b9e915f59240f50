// The checkpoint keeper over an in-memory store and checkpoint files in memory that fail on
// purpose: commits, manifests, resume choice with bad checksums and missing directories,
// background hashes, retention and the saves it gives up.
#include "daemon/checkpoints/keeper.h"

#include <thread>

#include "common/ckpt/layout.h"
#include "common/strings.h"
#include "daemon/checkpoints/fake_checkpoint_files.h"
#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "gtest/gtest.h"

namespace belay::checkpoints {
namespace {

using namespace std::chrono_literals;

class KeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    campaign_.set_id("tiny-1");
    campaign_.set_owner_uid(1000);
    spec_.dir = "/ckpt";
    spec_.keep_last = 2;
  }
  CheckpointKeeper& Keeper() {
    if (!keeper_) {
      keeper_ = std::make_unique<CheckpointKeeper>(store_, events_, clock_, files_, background_);
    }
    return *keeper_;
  }
  // Rank `rank` of `attempt` (two ranks) reports its half of a 10-element tensor "w" at
  // `step`; the fake files get the step directory.
  absl::StatusOr<ShardReceipt> Report(int32_t attempt, int64_t step, int rank) {
    files_.AddStep(spec_.dir, campaign_.id(), step);
    const pb::CheckpointShard sh = HalfOfTensorW(
        step, rank,
        (ckpt::StepDir(spec_.dir, campaign_.id(), step) / ckpt::ShardFileName(rank)).string(), 20,
        0x1234 + static_cast<uint64_t>(rank));
    pb::StepMetrics m;
    m.set_step(step);
    m.set_loss(2.5);
    return Keeper().AddShard(campaign_, spec_, attempt, 2, sh, rank == 0 ? &m : nullptr);
  }
  void Commit(int32_t attempt, int64_t step) {
    for (int r : {1, 0}) {
      absl::StatusOr<ShardReceipt> got = Report(attempt, step, r);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(got->committed, r == 0) << got->message;
    }
  }
  pb::Checkpoint Record(int64_t step) {
    return store::GetCheckpoint(store_, campaign_.id(), step).value().value();
  }
  bool StepOnDisk(int64_t step) {
    return files_.Exists(ckpt::StepDir(spec_.dir, campaign_.id(), step));
  }
  bool HasEvent(const std::string& text) {
    const std::vector<pb::Event> events = store::ListEvents(store_, campaign_.id()).value();
    for (const pb::Event& e : events) {
      if (e.message().find(text) != std::string::npos) return true;
    }
    return false;
  }
  // The next attempt, to resume from `step`: PrepareResume, its batch written.
  absl::StatusOr<Resume> Prepare(pb::Attempt& a, int64_t step) {
    a.set_number(2);
    a.set_start_checkpoint_step(step);
    store::WriteBatch b;
    absl::StatusOr<Resume> r = Keeper().PrepareResume(campaign_, a, b);
    if (r.ok() && !b.empty()) {
      if (absl::Status s = store_.Write(b, store::Durability::kSynced); !s.ok()) return s;
    }
    return r;
  }

  store::MemoryStore store_;
  FakeClock clock_;
  store::EventLog events_{store_, clock_};
  FakeCheckpointFiles files_;
  bool background_ = false;
  std::unique_ptr<CheckpointKeeper> keeper_;
  pb::Campaign campaign_;
  CheckpointSpec spec_;
};

TEST_F(KeeperTest, ACheckpointCommitsOnceEveryRankReportedAndGetsItsManifest) {
  absl::StatusOr<ShardReceipt> first = Report(1, 10, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->committed);
  EXPECT_EQ(first->reported, 1);
  EXPECT_EQ(first->expected, 2);
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_PENDING);  // phase one is kept
  absl::StatusOr<ShardReceipt> again = Report(1, 10, 1);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->reported, 1);  // a retry changes nothing
  absl::StatusOr<ShardReceipt> last = Report(1, 10, 0);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_TRUE(last->committed);
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_COMMITTED);
  EXPECT_EQ(Record(10).metrics().loss(), 2.5);
  EXPECT_EQ(campaign_.last_checkpoint_step(), 10);
  ASSERT_EQ(files_.manifests().size(), 1u);
  EXPECT_EQ(files_.manifests().begin()->first, ckpt::StepDir(spec_.dir, campaign_.id(), 10));
  EXPECT_TRUE(HasEvent("checkpoint step 10 committed (2 shards"));
}

TEST_F(KeeperTest, AManifestThatCannotBeWrittenIsWrittenBeforeTheResume) {
  files_.FailManifest(absl::PermissionDeniedError("read-only file system"));
  Commit(1, 10);
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_COMMITTED);  // the commit stands
  EXPECT_TRUE(files_.manifests().empty());
  EXPECT_TRUE(HasEvent("manifest.json of checkpoint step 10 not written: read-only file system"));
  files_.FailManifest(absl::OkStatus());
  pb::Attempt next;
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kReady);
  EXPECT_EQ(next.start_checkpoint_step(), 10);
  EXPECT_EQ(files_.manifests().size(), 1u);
}

TEST_F(KeeperTest, ACheckpointWithABadChecksumIsCorruptAndTheOneBeforeIsChosen) {
  Commit(1, 10);
  Commit(1, 20);
  files_.SetProblem(ckpt::StepDir(spec_.dir, campaign_.id(), 20),
                    "rank_00001.bin: checksum mismatch");
  pb::Attempt next;
  ASSERT_EQ(Prepare(next, 20).value(), Resume::kReady);
  EXPECT_EQ(next.start_checkpoint_step(), 10);
  EXPECT_EQ(Record(20).state(), pb::CHECKPOINT_STATE_CORRUPT);
  EXPECT_EQ(Record(20).state_message(), "rank_00001.bin: checksum mismatch");
  EXPECT_TRUE(HasEvent("resumes from checkpoint step 10 instead of 20"));
}

TEST_F(KeeperTest, ACheckpointWhoseDirectoryIsGoneIsDeletedAndWithoutAnyTheAttemptStartsOver) {
  Commit(1, 10);
  ASSERT_TRUE(files_.DeleteStep(spec_.dir, campaign_.id(), 10, 1000).ok());
  pb::Attempt next;
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kReady);
  EXPECT_FALSE(next.has_start_checkpoint_step());
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_TRUE(HasEvent("checkpoint step 10 was removed from disk"));
  EXPECT_TRUE(HasEvent("no usable checkpoint at or before step 10: attempt 2 starts from step 0"));
}

TEST_F(KeeperTest, ShardsTheOwnerCannotReadMakeTheCheckpointCorrupt) {
  Commit(1, 10);
  files_.FailVerify(absl::PermissionDeniedError("rank_00000.bin: permission denied"));
  pb::Attempt next;
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kReady);
  EXPECT_FALSE(next.has_start_checkpoint_step());
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_CORRUPT);
  EXPECT_EQ(Record(10).state_message(),
            "its shards cannot be read as the campaign's owner: rank_00000.bin: permission denied");
}

TEST_F(KeeperTest, AnOwnerWhoseUserEntryDoesNotAnswerLeavesTheResumePending) {
  Commit(1, 10);
  files_.FailVerify(absl::UnavailableError("LDAP does not answer"));
  pb::Attempt next;
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kPending);
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_COMMITTED);
  files_.FailVerify(absl::OkStatus());
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kReady);
  EXPECT_EQ(next.start_checkpoint_step(), 10);
}

TEST_F(KeeperTest, BackgroundHashesLeaveTheResumePendingUntilTheyEnd) {
  background_ = true;
  Commit(1, 10);
  files_.HoldVerify(true);
  pb::Attempt next;
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kPending);
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kPending);  // the same hash, not a second
  files_.HoldVerify(false);
  absl::StatusOr<Resume> r = Resume::kPending;
  for (int i = 0; i < 500 && r.ok() && *r == Resume::kPending; ++i) {
    std::this_thread::sleep_for(10ms);
    r = Prepare(next, 10);
  }
  ASSERT_EQ(r.value(), Resume::kReady);
  EXPECT_EQ(next.start_checkpoint_step(), 10);
  EXPECT_EQ(files_.verified(), 1);
}

TEST_F(KeeperTest, RetentionMarksTheCatalogFirstAndADeleteThatFailsLeavesOnlyItsDirectory) {
  files_.FailDelete(10);
  Commit(1, 10);
  Commit(1, 20);
  Commit(1, 30);  // keep_last 2: step 10 goes
  Commit(1, 40);  // and step 20
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_EQ(Record(20).state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_EQ(Record(30).state(), pb::CHECKPOINT_STATE_COMMITTED);
  EXPECT_TRUE(StepOnDisk(10));  // its delete failed
  EXPECT_FALSE(StepOnDisk(20));
  EXPECT_TRUE(StepOnDisk(30));
  EXPECT_TRUE(HasEvent("retention (keep_last 2, keep_every 0) deletes checkpoint step 10"));
}

TEST_F(KeeperTest, RetentionSparesTheGoodCheckpoint) {
  Commit(1, 10);
  store::WriteBatch b;
  ASSERT_TRUE(Keeper().MarkGood(b, campaign_, 5, 1).ok());
  ASSERT_TRUE(store_.Write(b, store::Durability::kSynced).ok());
  EXPECT_TRUE(Record(10).good());
  EXPECT_EQ(campaign_.last_good_checkpoint_step(), 10);
  Commit(1, 20);
  Commit(1, 30);
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_COMMITTED);
  EXPECT_TRUE(StepOnDisk(10));
}

TEST_F(KeeperTest, UnfinishedSavesAreGivenUpAndTheirDirectoriesRemovedBeforeTheNextAttempt) {
  Commit(1, 10);
  ASSERT_TRUE(Report(1, 20, 1).ok());  // rank 0 never reported
  pb::Attempt next;
  ASSERT_EQ(Prepare(next, 10).value(), Resume::kReady);
  EXPECT_EQ(Record(20).state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_TRUE(HasEvent("save of attempt 1 never completed (1 of 2 shards reported)"));
  files_.AddStep(spec_.dir, campaign_.id(), 25);  // a directory with no record at all
  Keeper().RemoveUncommittedSteps(campaign_, spec_.dir);
  EXPECT_TRUE(StepOnDisk(10));
  EXPECT_FALSE(StepOnDisk(20));
  EXPECT_FALSE(StepOnDisk(25));
}

TEST_F(KeeperTest, ARollbackGivesUpTheCheckpointsAfterItsTarget) {
  Commit(1, 10);
  Commit(1, 20);
  store::WriteBatch b;
  ASSERT_TRUE(Keeper().AbandonAfter(b, campaign_, 10, 1).ok());
  ASSERT_TRUE(store_.Write(b, store::Durability::kSynced).ok());
  EXPECT_EQ(Record(10).state(), pb::CHECKPOINT_STATE_COMMITTED);
  EXPECT_EQ(Record(20).state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_EQ(Record(20).state_message(), "given up by the rollback to step 10");
  EXPECT_EQ(campaign_.last_checkpoint_step(), 10);
  store::WriteBatch to_zero;
  ASSERT_TRUE(Keeper().AbandonAfter(to_zero, campaign_, -1, 1).ok());
  EXPECT_FALSE(campaign_.has_last_checkpoint_step());
}

TEST_F(KeeperTest, AReportForAnotherRanksPathIsRefused) {
  files_.AddStep(spec_.dir, campaign_.id(), 10);
  pb::CheckpointShard sh;
  sh.set_step(10);
  sh.set_rank(1);
  sh.set_path("/etc/passwd");
  sh.set_bytes(20);
  absl::StatusOr<ShardReceipt> got = Keeper().AddShard(campaign_, spec_, 1, 2, sh, nullptr);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(store::GetCheckpoint(store_, campaign_.id(), 10).value().has_value());
}

}  // namespace
}  // namespace belay::checkpoints
