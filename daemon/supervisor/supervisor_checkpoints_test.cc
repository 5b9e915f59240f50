// The Supervisor with its checkpoint keeper: commits from shard reports, manifests, resume
// from a verified checkpoint, rollbacks, retention, the owner's rights and symlinks.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/supervisor/supervisor_fixture.h"

namespace belay::supervisor {
namespace {

TEST_F(SupervisorTest, ACorruptCheckpointIsSkippedForThePreviousOne) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 45);
  Save(id, 1, 20);
  Save(id, 1, 40);
  const fs::path c20 = StepDir(id, 20), c40 = StepDir(id, 40);
  std::ofstream(c40 / "rank_00000.bin", std::ios::in | std::ios::out) << "X";  // a flipped byte
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  clock_.Advance(1min);
  Tick();
  pb::Attempt a2 = Attempt(id, 2);
  EXPECT_EQ(a2.start_checkpoint_step(), 20);
  const std::vector<std::string>& cmd = sched_.submitted().back().command;
  EXPECT_NE(std::find(cmd.begin(), cmd.end(), c20.string()), cmd.end());
  pb::Checkpoint bad = store::GetCheckpoint(store_, id, 40).value().value();
  EXPECT_EQ(bad.state(), pb::CHECKPOINT_STATE_CORRUPT);
  EXPECT_NE(bad.state_message().find("checksum mismatch"), std::string::npos)
      << bad.state_message();
  EXPECT_TRUE(HasEvent(id, "checkpoint step 40 is corrupt"));
  EXPECT_TRUE(HasEvent(id, "resumes from checkpoint step 20 instead of 40"));

  // With the remaining one gone from disk too, the next attempt starts over.
  sched_.End(JobOf(id, 2), Crash(0, SIGKILL));
  fs::remove_all(c20);
  Tick();
  clock_.Advance(10min);
  Tick();
  EXPECT_FALSE(Attempt(id, 3).has_start_checkpoint_step());
  EXPECT_EQ(store::GetCheckpoint(store_, id, 20).value()->state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_TRUE(HasEvent(id, "starts from step 0"));
}

TEST_F(SupervisorTest, ResumeCheckpointsAreHashedInTheBackgroundWhileRoundsGoOn) {
  background_verify_ = true;
  MakeSupervisor();
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 45);
  Save(id, 1, 20);
  Save(id, 1, 40);
  std::ofstream(StepDir(id, 40) / "rank_00000.bin", std::ios::in | std::ios::out) << "X";
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  clock_.Advance(1min);
  // Each round looks at the hashes and goes on; the attempt is submitted once they are done.
  int rounds = 0;
  while (sched_.submitted().size() < 2 && rounds < 500) {
    Tick();
    ++rounds;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(sched_.submitted().size(), 2u) << "after " << rounds << " rounds";
  EXPECT_GE(rounds, 2) << "hashing two checkpoints took the background at least two looks";
  EXPECT_EQ(Attempt(id, 2).start_checkpoint_step(), 20);
  EXPECT_EQ(store::GetCheckpoint(store_, id, 40).value()->state(), pb::CHECKPOINT_STATE_CORRUPT);
  EXPECT_TRUE(HasEvent(id, "resumes from checkpoint step 20 instead of 40"));
  EXPECT_FALSE(EnvOf(sched_.submitted()[1], "BELAY_TOKEN").empty());
}

TEST_F(SupervisorTest, ANonFiniteLossRollsBackToTheLastGoodCheckpoint) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 10);
  Save(id, 1, 10);
  Steps(id, 1, 11, 16);  // 5 healthy steps after it: step 10 is good
  EXPECT_EQ(Campaign(id).last_good_checkpoint_step(), 10);
  Save(id, 1, 20);
  Steps(id, 1, 17, 20);
  Steps(id, 1, 21, 21, std::nan(""));
  ASSERT_FALSE(sched_.signals().empty());
  EXPECT_EQ(sched_.signals().back().second, SIGKILL);
  Tick();
  pb::Campaign c = Campaign(id);
  EXPECT_EQ(c.rollbacks_used(), 1);
  EXPECT_EQ(c.restarts_used(), 0);
  EXPECT_EQ(Attempt(id, 1).end_reason(), pb::END_REASON_NAN);
  EXPECT_EQ(Attempt(id, 2).start_checkpoint_step(), 10) << "not the unproven step 20";
  EXPECT_TRUE(HasEvent(id, "non-finite loss at step 21"));
  // Step 20 lies on the abandoned trajectory: given up, and its files go before attempt 2.
  EXPECT_EQ(store::GetCheckpoint(store_, id, 20).value()->state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_EQ(c.last_checkpoint_step(), 10);
  clock_.Advance(1h);
  Tick();
  EXPECT_FALSE(fs::exists(StepDir(id, 20)));
  EXPECT_TRUE(fs::exists(StepDir(id, 10)));
}

TEST_F(SupervisorTest, ACheckpointCommitsWhenEveryShardIsReportedThenGetsItsManifest) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 20);
  absl::StatusOr<Supervisor::ShardReceipt> first = SaveShard(id, 1, 20, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->committed);
  EXPECT_EQ(first->reported, 1);
  EXPECT_EQ(first->expected, 2);
  pb::Checkpoint pending = store::GetCheckpoint(store_, id, 20).value().value();
  EXPECT_EQ(pending.state(), pb::CHECKPOINT_STATE_PENDING);
  EXPECT_FALSE(Campaign(id).has_last_checkpoint_step());
  EXPECT_FALSE(fs::exists(StepDir(id, 20) / "manifest.json"));
  // A restarted belayd still holds the first report (phase one is persisted).
  MakeSupervisor();
  absl::StatusOr<Supervisor::ShardReceipt> second = SaveShard(id, 1, 20, 0);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->committed);
  EXPECT_EQ(second->reported, 2);
  pb::Checkpoint ck = store::GetCheckpoint(store_, id, 20).value().value();
  EXPECT_EQ(ck.state(), pb::CHECKPOINT_STATE_COMMITTED);
  EXPECT_EQ(ck.shards_size(), 2);
  EXPECT_EQ(ck.metrics().loss(), 2.5);
  EXPECT_EQ(Campaign(id).last_checkpoint_step(), 20);
  absl::StatusOr<ckpt::Manifest> m = ckpt::ReadManifest(StepDir(id, 20));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->campaign, id);
  EXPECT_EQ(m->world_size, 2);
  EXPECT_EQ(m->shard_map->Find("w", 0, 10).size(), 2u);
  EXPECT_EQ(m->metrics["loss"].get<double>(), 2.5);
  EXPECT_TRUE(ckpt::VerifyShards(StepDir(id, 20), *m).ok());
  EXPECT_TRUE(HasEvent(id, "checkpoint step 20 committed (2 shards"));
  // A repeat of a report is harmless; a changed one is refused.
  absl::StatusOr<Supervisor::ShardReceipt> again = SaveShard(id, 1, 20, 0);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->committed);
  absl::StatusOr<Supervisor::ShardReceipt> changed = SaveShard(id, 1, 20, 0, "other bytes");
  EXPECT_EQ(changed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store::GetCheckpoint(store_, id, 20).value()->state(), pb::CHECKPOINT_STATE_COMMITTED);
}

TEST_F(SupervisorTest, ShardReportsThatDoNotFitAreRefusedOrIgnored) {
  const std::string id = SubmitAndStart();
  Tick();
  pb::CheckpointShard elsewhere;
  elsewhere.set_step(10);
  elsewhere.set_rank(0);
  elsewhere.set_path("/etc/passwd");
  elsewhere.set_bytes(100);
  EXPECT_EQ(sup_->OnShard(id, 1, elsewhere, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Another attempt's token cannot add to this one's checkpoints.
  absl::StatusOr<Supervisor::ShardReceipt> stale = SaveShard(id, 7, 10, 0);
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->committed);
  EXPECT_NE(stale->message.find("not running"), std::string::npos);
  EXPECT_FALSE(store::GetCheckpoint(store_, id, 10).value().has_value());
  // Slices that leave part of a tensor uncovered: the step is not committed.
  ASSERT_TRUE(SaveShard(id, 1, 10, 0).ok());
  pb::CheckpointShard gap;
  gap.set_step(10);
  gap.set_rank(1);
  gap.set_path((StepDir(id, 10) / "rank_00001.bin").string());
  std::ofstream(gap.path()) << "x";
  gap.set_bytes(1);
  pb::TensorSlice* t = gap.add_tensors();
  t->set_name("w");
  t->add_shape(10);
  t->set_element_offset(6);
  t->set_element_count(4);
  absl::StatusOr<Supervisor::ShardReceipt> bad = sup_->OnShard(id, 1, gap, nullptr);
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_FALSE(bad->committed);
  EXPECT_EQ(store::GetCheckpoint(store_, id, 10).value()->state(), pb::CHECKPOINT_STATE_CORRUPT);
  EXPECT_TRUE(HasEvent(id, "checkpoint step 10 cannot be committed"));
  EXPECT_FALSE(Campaign(id).has_last_checkpoint_step());
}

TEST_F(SupervisorTest, RetentionKeepsTheNewestAndTheGoodOne) {
  spec_.checkpoint.keep_last = 2;
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 10);
  Save(id, 1, 10);
  Steps(id, 1, 11, 20);  // step 10 becomes good
  ASSERT_EQ(Campaign(id).last_good_checkpoint_step(), 10);
  EXPECT_TRUE(store::GetCheckpoint(store_, id, 10).value()->good());
  Save(id, 1, 20);
  Save(id, 1, 30);
  // keep_last 2: 20 and 30 stay by count, 10 as the newest good one; nothing deleted yet.
  EXPECT_TRUE(fs::exists(StepDir(id, 10)));
  Save(id, 1, 40);
  EXPECT_EQ(store::GetCheckpoint(store_, id, 20).value()->state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_FALSE(fs::exists(StepDir(id, 20)));
  for (int64_t kept : {10, 30, 40}) {
    EXPECT_EQ(store::GetCheckpoint(store_, id, kept).value()->state(),
              pb::CHECKPOINT_STATE_COMMITTED)
        << kept;
    EXPECT_TRUE(fs::exists(StepDir(id, kept) / "manifest.json")) << kept;
  }
  EXPECT_TRUE(HasEvent(id, "deletes checkpoint step 20"));
}

// The campaign's checkpoint directory is the owner's (its ranks run as the owner): swapped for
// a symlink to another place, belayd neither writes a manifest nor deletes anything there.

TEST_F(SupervisorTest, NoCheckpointFileIsWrittenOrDeletedBehindASymlink) {
  spec_.checkpoint.keep_last = 1;
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 10);
  Save(id, 1, 10);
  const fs::path real = dir_ / "ckpt" / id, elsewhere = dir_ / "elsewhere";
  fs::rename(real, elsewhere);
  fs::create_directory_symlink(elsewhere, real);
  Steps(id, 1, 11, 30);
  Save(id, 1, 20);
  Save(id, 1, 30);  // retention (keep_last 1, 10 the good one) would delete step 20
  EXPECT_FALSE(fs::exists(elsewhere / "step_000000030" / "manifest.json"));
  EXPECT_TRUE(HasEvent(id, "manifest.json of checkpoint step 30 not written"));
  EXPECT_TRUE(fs::exists(elsewhere / "step_000000020"));
  // Nor is anything removed there before the next attempt.
  fs::create_directories(elsewhere / "step_000000035");
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  clock_.Advance(1min);
  Tick();
  EXPECT_TRUE(fs::exists(elsewhere / "step_000000035"));
}

// belayd as root handles the files of a campaign's checkpoints with its owner's rights: the
// manifest it writes belongs to the owner, and a shard the owner swapped for a symlink to a
// file only root may read (with the very bytes the shard had, so root would find the sum
// right) fails its verification as unreadable instead of telling the owner about that file.

TEST_F(SupervisorTest, AsRootTheOwnersCheckpointFilesAreHandledWithTheOwnersRights) {
  const passwd* nobody = ::getpwnam("nobody");
  if (::geteuid() != 0 || nobody == nullptr) GTEST_SKIP() << "needs root and a user \"nobody\"";
  run_as_owner_ = true;
  MakeSupervisor();
  files_owner_ = nobody->pw_uid;
  fs::create_directories(dir_ / "ckpt");
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  absl::StatusOr<pb::Campaign> c =
      sup_->Submit(spec_, SpecText(), "/home/nobody/tiny.toml", nobody->pw_uid, "nobody");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string id = c->id();
  Tick();
  Tick();
  Steps(id, 1, 1, 10);
  Save(id, 1, 10);
  struct stat st {};
  ASSERT_EQ(::lstat((StepDir(id, 10) / "manifest.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, nobody->pw_uid);

  const fs::path secret_dir = dir_ / "root_only", shard = StepDir(id, 10) / ckpt::ShardFileName(0);
  fs::create_directory(secret_dir);
  fs::permissions(secret_dir, fs::perms::owner_all);
  fs::copy_file(shard, secret_dir / "copy");
  fs::remove(shard);
  fs::create_symlink(secret_dir / "copy", shard);
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  clock_.Advance(1min);
  Tick();
  const pb::Checkpoint ck = store::GetCheckpoint(store_, id, 10).value().value();
  EXPECT_EQ(ck.state(), pb::CHECKPOINT_STATE_CORRUPT);
  EXPECT_NE(ck.state_message().find("ermission denied"), std::string::npos) << ck.state_message();
  EXPECT_FALSE(Attempt(id, 2).has_start_checkpoint_step());  // from the start
}

TEST_F(SupervisorTest, HalfWrittenSavesAreRemovedBeforeTheNextAttempt) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 31);
  Save(id, 1, 20);
  ASSERT_TRUE(SaveShard(id, 1, 30, 0).ok());  // rank 1 died before reporting
  fs::create_directories(StepDir(id, 25));    // a directory the catalog never heard of
  fs::create_directories(dir_ / "ckpt" / id / "step_000000030.tmp");  // a standalone leftover
  std::ofstream(StepDir(id, 20) / "rank_00000.bin.0123456789abcdef.tmp") << "partial";
  fs::remove(StepDir(id, 20) / "manifest.json");  // belayd died before writing it
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  clock_.Advance(1min);
  Tick();
  EXPECT_EQ(Attempt(id, 2).start_checkpoint_step(), 20);
  pb::Checkpoint half = store::GetCheckpoint(store_, id, 30).value().value();
  EXPECT_EQ(half.state(), pb::CHECKPOINT_STATE_DELETED);
  EXPECT_NE(half.state_message().find("1 of 2 shards reported"), std::string::npos)
      << half.state_message();
  EXPECT_FALSE(fs::exists(StepDir(id, 30)));
  EXPECT_FALSE(fs::exists(StepDir(id, 25)));
  EXPECT_FALSE(fs::exists(dir_ / "ckpt" / id / "step_000000030.tmp"));
  EXPECT_FALSE(fs::exists(StepDir(id, 20) / "rank_00000.bin.0123456789abcdef.tmp"));
  // The committed one stays, and has its manifest again for the workers.
  ASSERT_TRUE(fs::exists(StepDir(id, 20) / "manifest.json"));
  EXPECT_TRUE(ckpt::ReadManifest(StepDir(id, 20)).ok());
  // Attempt 2 saves step 30 again: a fresh record, committed.
  Tick();
  Save(id, 2, 30);
  EXPECT_EQ(store::GetCheckpoint(store_, id, 30).value()->attempt_number(), 2);
}

}  // namespace
}  // namespace belay::supervisor
