// The Supervisor's lifecycle over the fixture of supervisor_fixture.h: campaigns run to the
// end, restarts, budgets and crash loops, cancels, unreachable or refusing schedulers, store
// failures and a restart of the supervisor itself.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/supervisor/supervisor_fixture.h"

namespace belay::supervisor {
namespace {

TEST_F(SupervisorTest, ACampaignRunsToCompletion) {
  const std::string id = SubmitAndStart();
  pb::Campaign c = Campaign(id);
  EXPECT_EQ(c.state(), pb::CAMPAIGN_STATE_SUBMITTED);
  ASSERT_EQ(sched_.submitted().size(), 1u);
  const sched::JobSpec& job = sched_.submitted()[0];
  EXPECT_EQ(job.world_size, 2);
  EXPECT_EQ(job.command[0], "/usr/bin/belay-worker");
  EXPECT_TRUE(std::find(job.command.begin(), job.command.end(), "--resume") == job.command.end());
  EXPECT_TRUE(fs::exists(dir_ / "campaigns" / id / "campaign.toml"));
  auto env = [&](const std::string& k) {
    for (const auto& [key, v] : job.env) {
      if (key == k) return v;
    }
    return std::string();
  };
  EXPECT_EQ(env("BELAY_CAMPAIGN"), id);
  EXPECT_EQ(env("BELAY_COORDINATOR"), "127.0.0.1:7000");
  EXPECT_EQ(env("BELAY_TOKEN").size(), 64u);
  EXPECT_EQ(sup_->AttemptOfToken(env("BELAY_TOKEN")), (Supervisor::AttemptRef{id, 1, 2, ""}));
  EXPECT_FALSE(sup_->AttemptOfToken("forged").has_value());
  // The store keeps no token (nor anything a token could be checked against without the key).
  const pb::Attempt stored = Attempt(id, 1);
  EXPECT_EQ(stored.worker_token_nonce().size(), 32u);
  EXPECT_EQ(stored.SerializeAsString().find(env("BELAY_TOKEN")), std::string::npos);

  EXPECT_EQ(env("BELAY_CHECKPOINT_MTBF"), "");  // every_steps is a number

  Tick();  // the job runs
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_RUNNING);
  EXPECT_EQ(Attempt(id, 1).state(), pb::ATTEMPT_STATE_RUNNING);
  Steps(id, 1, 1, 100);
  Finish(id, 1, pb::EXIT_KIND_COMPLETED);
  sched_.End(JobOf(id, 1));
  Tick();
  c = Campaign(id);
  EXPECT_EQ(c.state(), pb::CAMPAIGN_STATE_COMPLETED);
  EXPECT_EQ(c.end_reason(), pb::END_REASON_COMPLETED);
  EXPECT_EQ(c.current_step(), 100);
  EXPECT_EQ(store::ListStepMetrics(store_, id, 0, -1).value().size(), 100u);
  EXPECT_TRUE(HasEvent(id, "running -> completed"));
  Tick();  // nothing more happens to an ended campaign
  EXPECT_EQ(sched_.submitted().size(), 1u);
}

TEST_F(SupervisorTest, ACheckpointDirectoryOfAnotherStoreIsNeverTakenOver) {
  // tiny-1's checkpoints from a belayd whose state is gone: the new campaign is tiny-2, and
  // starting it leaves them alone.
  const fs::path foreign = dir_ / "ckpt" / "tiny-1" / "step_000000500";
  fs::create_directories(foreign);
  std::ofstream(foreign / "manifest.json") << "{}";
  const std::string id = SubmitAndStart();
  EXPECT_EQ(id, "tiny-2");
  Tick();
  EXPECT_TRUE(fs::exists(foreign / "manifest.json"));
  EXPECT_EQ(SubmitAndStart(), "tiny-3");
}

TEST_F(SupervisorTest, ARankCrashRestartsAfterBackoffFromTheLastCheckpoint) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 23);
  Save(id, 1, 20);
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  pb::Campaign c = Campaign(id);
  EXPECT_EQ(c.state(), pb::CAMPAIGN_STATE_RECOVERING);
  EXPECT_EQ(c.restarts_used(), 1);
  pb::Attempt a1 = Attempt(id, 1);
  EXPECT_EQ(a1.end_reason(), pb::END_REASON_RANK_CRASH);
  EXPECT_EQ(a1.end_message(), "rank 1 killed by signal 9 on fake-node-0");
  pb::Attempt a2 = Attempt(id, 2);
  EXPECT_EQ(a2.state(), pb::ATTEMPT_STATE_QUEUED);
  EXPECT_EQ(a2.start_checkpoint_step(), 20);
  EXPECT_TRUE(HasEvent(id, "restart 1 of 3 in 30 s"));

  clock_.Advance(29s);
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 1u) << "started before its backoff";
  clock_.Advance(2s);
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 2u);
  const std::vector<std::string>& cmd = sched_.submitted()[1].command;
  auto resume = std::find(cmd.begin(), cmd.end(), "--resume");
  ASSERT_NE(resume, cmd.end());
  EXPECT_EQ(*(resume + 1), StepDir(id, 20).string());
  Tick();
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_RUNNING);
}

TEST_F(SupervisorTest, WithAutoSaveIntervalsTheWorkersLearnTheFailureRateSoFar) {
  spec_.checkpoint.every_steps = std::nullopt;  // "auto"
  const std::string id = SubmitAndStart();
  EXPECT_EQ(EnvOf(sched_.submitted()[0], "BELAY_CHECKPOINT_MTBF"), "4h");  // the prior alone
  Tick();
  clock_.Advance(2h);
  Steps(id, 1, 1, 23);
  Save(id, 1, 20);
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  clock_.Advance(1min);
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 2u);
  // One failure in two hours of the campaign's own: (4 h + 2 h) / 2.
  EXPECT_EQ(EnvOf(sched_.submitted()[1], "BELAY_CHECKPOINT_MTBF"), "3h");
}

TEST_F(SupervisorTest, TheSameCrashWithoutNewCheckpointsStopsTheCampaign) {
  const std::string id = SubmitAndStart();
  Tick();
  sched_.End(JobOf(id, 1), Crash(0, SIGSEGV));
  Tick();
  clock_.Advance(1min);
  Tick();
  Tick();
  sched_.End(JobOf(id, 2), Crash(0, SIGSEGV));
  Tick();
  pb::Campaign c = Campaign(id);
  EXPECT_EQ(c.state(), pb::CAMPAIGN_STATE_FAILED);
  EXPECT_EQ(c.end_reason(), pb::END_REASON_CRASH_LOOP);
  EXPECT_TRUE(HasEvent(id, "crash loop")) << EventMessages(id).back();
  EXPECT_EQ(sched_.submitted().size(), 2u);
}

TEST_F(SupervisorTest, RestartsBeyondTheBudgetFailTheCampaign) {
  const std::string id = SubmitAndStart();
  for (int n = 1; n <= 4; ++n) {
    Tick();
    Steps(id, n, 10 * n - 9, 10 * n);
    Save(id, n, 10 * n);  // progress every time
    sched_.End(JobOf(id, n), Crash(1, SIGKILL));
    Tick();
    clock_.Advance(1h);
    Tick();
  }
  pb::Campaign c = Campaign(id);
  EXPECT_EQ(c.state(), pb::CAMPAIGN_STATE_FAILED);
  EXPECT_EQ(c.end_reason(), pb::END_REASON_RESTARTS_EXHAUSTED);
  EXPECT_EQ(c.restarts_used(), 3);
  EXPECT_EQ(sched_.submitted().size(), 4u);
}

TEST_F(SupervisorTest, ATimeLimitContinuesAtOnceWithoutCountingARestart) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 30);
  Save(id, 1, 30);
  Finish(id, 1, pb::EXIT_KIND_TIME_LIMIT_CHECKPOINTED);
  sched_.End(JobOf(id, 1));
  Tick();
  EXPECT_EQ(Campaign(id).restarts_used(), 0);
  Tick();  // no backoff
  EXPECT_EQ(sched_.submitted().size(), 2u);
  EXPECT_EQ(Attempt(id, 2).start_checkpoint_step(), 30);
}

TEST_F(SupervisorTest, MissingDataFailsWithoutRetry) {
  const std::string id = SubmitAndStart();
  Tick();
  Finish(id, 1, pb::EXIT_KIND_ERROR, pb::END_REASON_MISSING_DATA);
  sched_.End(JobOf(id, 1), {}, 1);
  Tick();
  pb::Campaign c = Campaign(id);
  EXPECT_EQ(c.state(), pb::CAMPAIGN_STATE_FAILED);
  EXPECT_EQ(c.end_reason(), pb::END_REASON_MISSING_DATA);
  clock_.Advance(1h);
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 1u);
}

TEST_F(SupervisorTest, CancelStopsTheRunningAttemptGracefullyThenForcibly) {
  const std::string id = SubmitAndStart();
  Tick();
  sched_.set_kill_ends_job(false);
  ASSERT_TRUE(sup_->Cancel(id).ok());
  Tick();
  ASSERT_EQ(sched_.signals().size(), 1u);
  EXPECT_EQ(sched_.signals()[0].second, SIGUSR1);
  clock_.Advance(61s);
  Tick();
  ASSERT_EQ(sched_.signals().size(), 2u);
  EXPECT_EQ(sched_.signals()[1].second, SIGKILL);
  sched_.End(JobOf(id, 1), Crash(0, SIGKILL));
  Tick();
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_CANCELLED);
  EXPECT_EQ(Attempt(id, 1).end_reason(), pb::END_REASON_CANCELLED_BY_USER);
  EXPECT_TRUE(absl::IsFailedPrecondition(sup_->Cancel(id)));
  EXPECT_TRUE(absl::IsNotFound(sup_->Cancel("nope-1")));
}

TEST_F(SupervisorTest, ACampaignCancelledWhileWaitingForBackoffNeverStartsAgain) {
  const std::string id = SubmitAndStart();
  Tick();
  sched_.End(JobOf(id, 1), Crash(0, SIGKILL));
  Tick();
  ASSERT_TRUE(sup_->Cancel(id).ok());
  Tick();
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_CANCELLED);
  clock_.Advance(1h);
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 1u);
}

TEST_F(SupervisorTest, AnUnreachableSchedulerIsAskedAgainNextRound) {
  sched_.FailNextSubmit(absl::UnavailableError("slurmctld is down"));
  const std::string id = SubmitAndStart();
  pb::Attempt a = Attempt(id, 1);
  EXPECT_EQ(a.state(), pb::ATTEMPT_STATE_QUEUED);
  EXPECT_EQ(a.end_reason(), pb::END_REASON_UNSPECIFIED);
  const std::string nonce = a.worker_token_nonce();
  EXPECT_FALSE(nonce.empty());
  Tick();
  a = Attempt(id, 1);
  EXPECT_EQ(a.state(), pb::ATTEMPT_STATE_STARTING);
  EXPECT_EQ(a.worker_token_nonce(), nonce) << "the retry hands out the same token";
  EXPECT_EQ(sched_.submitted().size(), 1u);
  EXPECT_TRUE(sup_->AttemptOfToken(EnvOf(sched_.submitted()[0], "BELAY_TOKEN")).has_value());
}

TEST_F(SupervisorTest, AnUnreachableBackendHoldsUpOnlyItsOwnCampaigns) {
  const std::string local = SubmitAndStart();
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  const std::string slurm = SubmitAndStart();
  Tick();
  ASSERT_EQ(Attempt(slurm, 1).state(), pb::ATTEMPT_STATE_RUNNING);
  // slurmctld is down: polls of the Slurm job fail; the local campaign carries on.
  sched_.FailPollsOf(JobOf(slurm, 1), absl::UnavailableError("slurmctld unreachable"));
  Finish(local, 1, pb::EXIT_KIND_COMPLETED);
  sched_.End(JobOf(local, 1));
  sched_.End(JobOf(slurm, 1), Crash(1, SIGKILL));  // unseen while slurmctld is away
  Tick();
  Tick();
  EXPECT_EQ(Campaign(local).state(), pb::CAMPAIGN_STATE_COMPLETED);
  EXPECT_EQ(Attempt(slurm, 1).state(), pb::ATTEMPT_STATE_RUNNING);
  EXPECT_EQ(Campaign(slurm).state(), pb::CAMPAIGN_STATE_RUNNING);
  // Back: the Slurm job's end is seen and handled.
  sched_.FailPollsOf(JobOf(slurm, 1), absl::OkStatus());
  Tick();
  EXPECT_EQ(Attempt(slurm, 1).end_reason(), pb::END_REASON_RANK_CRASH);
  EXPECT_EQ(Campaign(slurm).state(), pb::CAMPAIGN_STATE_RECOVERING);
}

TEST_F(SupervisorTest, ASchedulerThatRefusesTheJobCountsAsAFailedStart) {
  sched_.FailNextSubmit(absl::FailedPreconditionError("invalid partition specified"));
  const std::string id = SubmitAndStart();
  pb::Attempt a = Attempt(id, 1);
  EXPECT_EQ(a.end_reason(), pb::END_REASON_SCHEDULER_REJECTED);
  EXPECT_EQ(a.end_message(), "invalid partition specified");
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_RECOVERING);
  clock_.Advance(31s);
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 1u);
  EXPECT_EQ(Attempt(id, 2).state(), pb::ATTEMPT_STATE_STARTING);
}

TEST_F(SupervisorTest, AJobTheSchedulerForgotEndsAsLostAndIsReplaced) {
  const std::string id = SubmitAndStart();
  Tick();
  sched_.Forget(JobOf(id, 1));
  Tick();
  EXPECT_EQ(Attempt(id, 1).end_reason(), pb::END_REASON_DAEMON_LOST);
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 2u);
}

TEST_F(SupervisorTest, AStoreWriteFailureStopsEveryActionAfterIt) {
  absl::StatusOr<pb::Campaign> c = sup_->Submit(spec_, SpecText(), "tiny.toml", 1000, "u");
  ASSERT_TRUE(c.ok());
  store_.FailNextWrite(absl::InternalError("No space left on device"));
  absl::Status s = sup_->Tick();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("read-only"), std::string_view::npos) << s;
  EXPECT_TRUE(sched_.submitted().empty()) << "acted on a transition that was not written";
  EXPECT_FALSE(sup_->Tick().ok());
  EXPECT_TRUE(sched_.submitted().empty());
}

TEST_F(SupervisorTest, ARestartedSupervisorCarriesOnWithoutDuplicatingTheAttempt) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 12);
  MakeSupervisor();  // belayd restarted: same store, same scheduler
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 1u);
  EXPECT_GT(sched_.polls(), 0);
  const std::string token = EnvOf(sched_.submitted()[0], "BELAY_TOKEN");
  EXPECT_EQ(sup_->AttemptOfToken(token), (Supervisor::AttemptRef{id, 1, 2, ""}))
      << "workers' token known again";
  Steps(id, 1, 13, 100);
  Finish(id, 1, pb::EXIT_KIND_COMPLETED);
  sched_.End(JobOf(id, 1));
  Tick();
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_COMPLETED);
  // Events kept counting from where the first supervisor stopped: no sequence number reused.
  std::vector<int64_t> seqs;
  const std::vector<pb::Event> events = store::ListEvents(store_, id).value();
  for (const pb::Event& e : events) seqs.push_back(e.seq());
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], static_cast<int64_t>(i));
}

}  // namespace
}  // namespace belay::supervisor
