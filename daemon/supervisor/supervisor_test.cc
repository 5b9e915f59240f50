// The Supervisor over an in-memory store, the fake scheduler and a fake clock: every end
// reason of DESIGN.md's table, budgets, crash loops, hangs, NaN rollbacks, cancels, store
// failures and a restart of the supervisor itself.
#include "daemon/supervisor/supervisor.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/ckpt/manifest.h"
#include "common/strings.h"
#include "daemon/checkpoints/fake_checkpoint_files.h"
#include "daemon/scheduler/fake_scheduler.h"
#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "daemon/supervisor/rank_times.h"
#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kSpec = R"(
[campaign]
name = "tiny"
[model]
n_layer = 2
n_head = 2
d_model = 32
seq_len = 32
vocab_size = 257
[data]
train = "/data/train_*.bin"
[train]
total_steps = 100
micro_batch = 2
global_batch = 4
lr = 1e-3
[checkpoint]
dir = "/ckpt"
every_steps = 10
[resources]
ranks_per_node = 2
[restart]
max_restarts = 3
max_rollbacks = 2
hang_timeout = "5m"
backoff = { initial = "30s", max = "10m", jitter = 0.0 }
)";

std::string EnvOf(const sched::JobSpec& job, const std::string& key) {
  for (const auto& [k, v] : job.env) {
    if (k == key) return v;
  }
  return "";
}

bool Has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("belay_supervisor_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    SpecParseOptions o;
    o.check_paths = false;
    SpecParseResult parsed = ParseCampaignSpec(kSpec, "tiny.toml", o);
    ASSERT_TRUE(parsed.ok()) << parsed.errors[0].ToString();
    spec_ = *parsed.spec;
    spec_.checkpoint.dir = (dir_ / "ckpt").string();
    MakeSupervisor();
  }
  void TearDown() override { fs::remove_all(dir_); }

  void MakeSupervisor() {
    SupervisorOptions o;
    o.state_dir = dir_;
    o.worker_program = "/usr/bin/belay-worker";
    o.coordinator_address = "127.0.0.1:7000";
    o.good_after_steps = 5;
    o.verify_in_background = background_verify_;
    o.run_as_owner = run_as_owner_;
    o.token_key = token_key_;  // belayd's key file: the same across restarts
    sup_ = std::make_unique<Supervisor>(store_, sched_, clock_, o);
  }

  std::string SubmitAndStart() {
    absl::StatusOr<pb::Campaign> c = sup_->Submit(spec_, kSpec, "/home/u/tiny.toml", 1000, "u");
    EXPECT_TRUE(c.ok()) << c.status();
    Tick();
    return c->id();
  }
  void Tick() {
    absl::Status s = sup_->Tick();
    ASSERT_TRUE(s.ok()) << s;
  }
  // Most tests hash checkpoints inside the round, so that one Tick decides; one test runs
  // the background hashing belayd uses.
  bool background_verify_ = false;
  // Supervisor option run_as_owner (belayd as root), and the user the test hands the shard
  // files and step directories it writes to (0: they stay the test's), as if the campaign's
  // ranks had written them as their owner.
  bool run_as_owner_ = false;
  std::string token_key_ = AttemptTokens::RandomKey();
  uid_t files_owner_ = 0;
  // A Slurm campaign of `ranks` one-rank nodes n0, n1, ... whose ranks registered, reporting
  // `steps` steps, 10 s apart, in which rank 2 computes `slow_s` per step and the others about
  // 0.1 s; then its job ends at the time limit. Returns the campaign id ("" on failure).
  // With `restart_midway`, belayd restarts halfway through the steps.
  std::string RunWithASlowRank(int64_t steps, double slow_s, bool restart_midway = false,
                               int ranks = 4) {
    spec_.resources.scheduler = SchedulerKind::kSlurm;
    spec_.resources.nodes = ranks;
    spec_.resources.ranks_per_node = 1;
    spec_.train.global_batch = 2 * ranks;
    const std::string id = SubmitAndStart();
    if (Attempt(id, 1).world_size() != ranks) return "";
    std::vector<std::string> names;
    for (int r = 0; r < ranks; ++r) names.push_back(Cat("n", r));
    sched_.SetNodes(JobOf(id, 1), names);
    Tick();
    for (int r = 0; r < ranks; ++r) {
      if (!sup_->OnRegister(id, 1, r, Cat("n", r)).ok()) return "";
    }
    for (int64_t step = 1; step <= steps; ++step) {
      if (restart_midway && step == steps / 2) {
        MakeSupervisor();
        Tick();
      }
      pb::StepMetrics m;
      m.set_step(step);
      m.set_loss(3.0);
      for (int r = 0; r < ranks; ++r)
        m.add_rank_compute_time_s(r == 2 ? slow_s : 0.1 + 0.001 * (r % 4));
      if (!sup_->OnStep(id, 1, m).ok()) return "";
      clock_.Advance(10s);
    }
    sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_TIME_LIMIT, "TIMEOUT");
    Tick();
    return id;
  }
  pb::Campaign Campaign(const std::string& id) {
    return store::GetCampaign(store_, id).value().value();
  }
  pb::Attempt Attempt(const std::string& id, int n) {
    return store::GetAttempt(store_, id, n).value().value();
  }
  std::string JobOf(const std::string& id, int n) { return Attempt(id, n).scheduler_job_id(); }
  std::vector<std::string> EventMessages(const std::string& id) {
    std::vector<std::string> out;
    const std::vector<pb::Event> events = store::ListEvents(store_, id).value();
    for (const pb::Event& e : events) out.push_back(e.message());
    return out;
  }
  bool HasEvent(const std::string& id, const std::string& text) {
    for (const std::string& m : EventMessages(id)) {
      if (m.find(text) != std::string::npos) return true;
    }
    return false;
  }
  void Steps(const std::string& id, int attempt, int64_t first, int64_t last, double loss = 3.0) {
    for (int64_t s = first; s <= last; ++s) {
      pb::StepMetrics m;
      m.set_step(s);
      m.set_loss(loss);
      ASSERT_TRUE(sup_->OnStep(id, attempt, m).ok());
    }
  }
  // Steps [first, last] of 2 s each, reported one a second.
  void PacedSteps(const std::string& id, int attempt, int64_t first, int64_t last) {
    for (int64_t s = first; s <= last; ++s) {
      pb::StepMetrics m;
      m.set_step(s);
      m.set_loss(3.0);
      m.set_step_time_s(2.0);
      ASSERT_TRUE(sup_->OnStep(id, attempt, m).ok());
      clock_.Advance(1s);
    }
  }
  void Finish(const std::string& id, int attempt, pb::ExitKind kind,
              pb::EndReason reason = pb::END_REASON_UNSPECIFIED) {
    for (int r = 0; r < 2; ++r) {
      pb::RankExit e;
      e.set_rank(r);
      e.set_exit_kind(kind);
      e.set_error_reason(reason);
      e.set_message("from the worker");
      ASSERT_TRUE(sup_->OnFinish(id, attempt, e).ok());
    }
  }
  fs::path StepDir(const std::string& id, int64_t step) const {
    return ckpt::StepDir(dir_ / "ckpt", id, step);
  }
  // One rank of `attempt` reports its shard of `step`: a real file in the step directory
  // holding its half of a 10-element tensor "w".
  absl::StatusOr<Supervisor::ShardReceipt> SaveShard(const std::string& id, int attempt,
                                                     int64_t step, int rank,
                                                     const std::string& content = "") {
    const fs::path d = StepDir(id, step);
    fs::create_directories(d);
    const fs::path f = d / ckpt::ShardFileName(rank);
    std::ofstream(f) << (content.empty()
                             ? Cat("shard ", rank, " of step ", step, " attempt ", attempt)
                             : content);
    if (files_owner_ != 0) {
      for (const fs::path& p : {d.parent_path(), d, f})
        EXPECT_EQ(::lchown(p.c_str(), files_owner_, static_cast<gid_t>(-1)), 0);
    }
    const pb::CheckpointShard sh = checkpoints::HalfOfTensorW(
        step, rank, f.string(), static_cast<int64_t>(fs::file_size(f)), Xxh3File(f).value());
    pb::StepMetrics m;
    m.set_step(step);
    m.set_loss(2.5);
    return sup_->OnShard(id, attempt, sh, rank == 0 ? &m : nullptr);
  }
  // Both ranks save `step`; the checkpoint is committed.
  void Save(const std::string& id, int attempt, int64_t step) {
    for (int r : {1, 0}) {
      absl::StatusOr<Supervisor::ShardReceipt> got = SaveShard(id, attempt, step, r);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(got->committed, r == 0) << got->message;
    }
  }
  std::vector<sched::RankEnd> Crash(int rank, int signal) {
    std::vector<sched::RankEnd> ranks = {{0, 0, 0, "fake-node-0"}, {1, 0, 0, "fake-node-0"}};
    ranks[static_cast<size_t>(rank)] = {rank, std::nullopt, signal, "fake-node-0"};
    return ranks;
  }

  fs::path dir_;
  CampaignSpec spec_;
  store::MemoryStore store_;
  sched::FakeScheduler sched_;
  FakeClock clock_;
  std::unique_ptr<Supervisor> sup_;
};

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

TEST_F(SupervisorTest, AHangIsDetectedKilledAndRestarted) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 7);
  sup_->OnHeartbeat(id, 1, 0, 7, pb::WORKER_PHASE_COLLECTIVE);
  sup_->OnHeartbeat(id, 1, 1, 7, pb::WORKER_PHASE_BACKWARD);
  clock_.Advance(4min);
  Tick();
  EXPECT_TRUE(sched_.signals().empty());
  clock_.Advance(2min);  // 6 min without a step, hang_timeout 5 min
  Tick();
  ASSERT_EQ(sched_.signals().size(), 1u);
  EXPECT_EQ(sched_.signals()[0].second, SIGKILL);
  Tick();  // the killed job is seen ended
  pb::Attempt a = Attempt(id, 1);
  EXPECT_EQ(a.end_reason(), pb::END_REASON_HANG);
  EXPECT_NE(a.end_message().find("last step 7"), std::string::npos) << a.end_message();
  EXPECT_NE(a.end_message().find("rank 0: step 7, collective, 360 s ago; rank 1: step 7, backward"),
            std::string::npos)
      << a.end_message();
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_RECOVERING);
  EXPECT_EQ(Campaign(id).restarts_used(), 1);
}

TEST_F(SupervisorTest, AHangReportNamesTheRanksFurthestBehindNotEveryRank) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 7);
  for (int32_t r = 0; r < 100000; ++r) {
    sup_->OnHeartbeat(id, 1, r, r == 77777 ? 5 : 7, pb::WORKER_PHASE_COLLECTIVE);
  }
  clock_.Advance(6min);
  Tick();
  Tick();  // the killed job is seen ended
  const pb::Attempt a = Attempt(id, 1);
  ASSERT_EQ(a.end_reason(), pb::END_REASON_HANG);
  EXPECT_LT(a.end_message().size(), 2048u) << "not 100,000 ranks' heartbeats";
  EXPECT_NE(a.end_message().find("rank 77777: step 5, collective, 360 s ago"), std::string::npos)
      << a.end_message();
  EXPECT_NE(a.end_message().find("; 99984 more ranks at step 7"), std::string::npos)
      << a.end_message();
}

TEST_F(SupervisorTest, AnAutoHangTimeoutFollowsThePaceOfTheAttempt) {
  spec_.restart.hang_timeout = std::nullopt;  // "auto"
  const std::string id = SubmitAndStart();
  Tick();
  // Before the pace is known: the startup allowance (10 min).
  Steps(id, 1, 1, 5);
  clock_.Advance(9min);
  Tick();
  EXPECT_TRUE(sched_.signals().empty());
  // 20 steps of 2 s, one report per second... the floor (3 min) is the largest term.
  PacedSteps(id, 1, 6, 25);
  // A rank saving a checkpoint gets the startup allowance again.
  sup_->OnHeartbeat(id, 1, 0, 25, pb::WORKER_PHASE_CHECKPOINT);
  clock_.Advance(4min);
  Tick();
  EXPECT_TRUE(sched_.signals().empty()) << "killed during a save";
  sup_->OnHeartbeat(id, 1, 0, 25, pb::WORKER_PHASE_COLLECTIVE);
  Tick();
  ASSERT_EQ(sched_.signals().size(), 1u) << "4 min without a step, auto timeout 3 min";
  Tick();
  pb::Attempt a = Attempt(id, 1);
  EXPECT_EQ(a.end_reason(), pb::END_REASON_HANG);
  EXPECT_NE(a.end_message().find("no step progress for 180 s"), std::string::npos)
      << a.end_message();
}

TEST_F(SupervisorTest, ARestartedSupervisorKnowsThePaceOfTheRunningAttempt) {
  spec_.restart.hang_timeout = std::nullopt;  // "auto"
  const std::string id = SubmitAndStart();
  Tick();
  PacedSteps(id, 1, 1, 25);
  MakeSupervisor();  // belayd restarted: the pace comes back from the stored step reports
  Tick();
  clock_.Advance(4min);
  Tick();
  ASSERT_EQ(sched_.signals().size(), 1u)
      << "4 min without a step: the learned 3 min, not the 10 min allowance";
  Tick();
  EXPECT_NE(Attempt(id, 1).end_message().find("no step progress for 180 s"), std::string::npos)
      << Attempt(id, 1).end_message();
}

// While belayd is down the ranks' reports have nowhere to go: a belayd that comes back after
// longer than hang_timeout does not call the attempt hung for the time it was away.
TEST_F(SupervisorTest, TimeBelaydWasDownIsNotCountedAsAHang) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 7);
  clock_.Advance(20min);  // belayd down for 20 min, hang_timeout 5 min
  MakeSupervisor();
  Tick();
  EXPECT_TRUE(sched_.signals().empty()) << "killed for the time belayd was away";
  clock_.Advance(4min);
  Tick();
  EXPECT_TRUE(sched_.signals().empty());
  clock_.Advance(2min);  // 6 min watched without a step
  Tick();
  ASSERT_EQ(sched_.signals().size(), 1u);
  EXPECT_EQ(sched_.signals()[0].second, SIGKILL);
}

// The ranks retry with a backoff while belayd is away, so a restarted belayd gives them
// restart_grace to find it before any hang timeout can run out.
TEST_F(SupervisorTest, ARestartedBelaydGivesTheRanksTimeToFindItBeforeJudgingAHang) {
  spec_.restart.hang_timeout = std::chrono::seconds(10);
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 7);
  clock_.Advance(5s);
  MakeSupervisor();  // restart_grace 35 s
  Tick();
  clock_.Advance(20s);  // 20 s after the restart, more than hang_timeout
  Tick();
  EXPECT_TRUE(sched_.signals().empty()) << "judged before the ranks' retries could reach it";
  clock_.Advance(20s);
  Tick();
  ASSERT_EQ(sched_.signals().size(), 1u) << "40 s after the restart without a step";
  EXPECT_EQ(sched_.signals()[0].second, SIGKILL);
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
      sup_->Submit(spec_, kSpec, "/home/nobody/tiny.toml", nobody->pw_uid, "nobody");
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

TEST_F(SupervisorTest, AFailedNodeIsKeptOffLaterSubmissionsUntilItsExclusionLapses) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  const std::string id = SubmitAndStart();
  EXPECT_TRUE(sched_.submitted()[0].exclude_nodes.empty());
  sched_.SetNodes(JobOf(id, 1), {"n1", "n2"});
  Tick();
  Steps(id, 1, 1, 10);
  sched_.SetNodes(JobOf(id, 1), {"n2"});  // the node Slurm says is down
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "NODE_FAIL");
  Tick();
  EXPECT_EQ(Attempt(id, 1).end_reason(), pb::END_REASON_NODE_FAILURE);
  std::vector<pb::Node> nodes = store::ListNodes(store_).value();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].name(), "n1");
  EXPECT_EQ(nodes[0].attempts_hosted(), 1);
  EXPECT_EQ(nodes[0].failures_attributed(), 0);
  EXPECT_FALSE(nodes[0].excluded());
  EXPECT_EQ(nodes[1].name(), "n2");
  EXPECT_EQ(nodes[1].failures_attributed(), 1);
  EXPECT_TRUE(nodes[1].excluded());
  EXPECT_LT(nodes[1].reputation(), 0.5);
  EXPECT_TRUE(
      HasEvent(id, "node n2 excluded from new submissions after node_failure in attempt 1"));

  Tick();  // a node failure restarts at once
  ASSERT_EQ(sched_.submitted().size(), 2u);
  EXPECT_EQ(sched_.submitted()[1].exclude_nodes, std::vector<std::string>{"n2"});
  EXPECT_EQ(Attempt(id, 2).excluded_nodes().size(), 1);

  // Two hours on (the first exclusion lasts one), the next attempt may use n2 again.
  clock_.Advance(2h);
  Tick();
  Finish(id, 2, pb::EXIT_KIND_TIME_LIMIT_CHECKPOINTED);
  sched_.End(JobOf(id, 2));
  Tick();
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 3u);
  EXPECT_TRUE(sched_.submitted()[2].exclude_nodes.empty());
  EXPECT_EQ(Attempt(id, 3).excluded_nodes().size(), 0);
}

TEST_F(SupervisorTest, ACampaignCanOptOutOfNodeExclusion) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  spec_.restart.exclude_failed_nodes = false;
  const std::string id = SubmitAndStart();
  sched_.SetNodes(JobOf(id, 1), {"n1", "n2"});
  Tick();
  sched_.SetNodes(JobOf(id, 1), {"n2"});
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "NODE_FAIL");
  Tick();
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 2u);
  EXPECT_TRUE(sched_.submitted()[1].exclude_nodes.empty());
  EXPECT_TRUE(store::ListNodes(store_).value()[1].excluded());  // the record is kept all the same
}

TEST_F(SupervisorTest, SlurmNodeStatesAreCopiedIntoTheNodeRecordsOnceAMinute) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  sched_.SetNodeStates({{"n1", "IDLE", ""}, {"n2", "DOWN*", "Not responding", true}});
  const std::string id = SubmitAndStart();
  Tick();
  std::vector<pb::Node> nodes = store::ListNodes(store_).value();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].slurm_state(), "IDLE");
  EXPECT_EQ(nodes[1].slurm_state(), "DOWN*");
  EXPECT_DOUBLE_EQ(nodes[1].reputation(), 1.0);  // Slurm's state is not belay's evidence
  EXPECT_FALSE(nodes[1].excluded());
  sched_.SetNodeStates({{"n1", "ALLOCATED", ""}, {"n2", "IDLE", ""}});
  clock_.Advance(30s);
  Tick();
  EXPECT_EQ(store::ListNodes(store_).value()[0].slurm_state(), "IDLE");  // not yet
  clock_.Advance(31s);
  Tick();
  nodes = store::ListNodes(store_).value();
  EXPECT_EQ(nodes[0].slurm_state(), "ALLOCATED");
  EXPECT_EQ(nodes[1].slurm_state(), "IDLE");
}

TEST_F(SupervisorTest, WithTooFewUsableNodesAnAttemptRunsOnFewerAndTheNextOnAllAgain) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  spec_.resources.partition = "debug";
  spec_.resources.nodes = 2;
  spec_.resources.ranks_per_node = 1;
  spec_.resources.min_nodes = 1;
  auto node = [](std::string name, bool down) {
    sched::NodeState n;
    n.name = std::move(name);
    n.state = down ? "DOWN*" : "IDLE";
    n.down = down;
    n.partitions = {"debug"};
    n.in_default_partition = true;
    return n;
  };
  sched_.SetNodeStates({node("n1", false), node("n2", false), node("n3", false)});
  const std::string id = SubmitAndStart();
  EXPECT_EQ(sched_.submitted()[0].world_size, 2);
  sched_.SetNodes(JobOf(id, 1), {"n1", "n2"});
  Tick();
  Steps(id, 1, 1, 10);
  // n2 fails under the job; n3 is down as well by now.
  sched_.SetNodeStates({node("n1", false), node("n2", true), node("n3", true)});
  clock_.Advance(61s);
  Tick();  // node states read
  sched_.SetNodes(JobOf(id, 1), {"n2"});
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "NODE_FAIL");
  Tick();
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 2u);
  EXPECT_EQ(sched_.submitted()[1].world_size, 1);
  EXPECT_EQ(sched_.submitted()[1].ranks_per_node, 1);
  EXPECT_EQ(sched_.submitted()[1].exclude_nodes, std::vector<std::string>{"n2"});
  EXPECT_EQ(Attempt(id, 2).world_size(), 1);
  EXPECT_TRUE(
      HasEvent(id,
               "attempt 2 runs on 1 of 2 nodes (1 ranks instead of 2): only 1 of partition debug's "
               "nodes usable; Slurm has n2, n3 down or drained; belay excludes n2"))
      << EventMessages(id).back();

  // n3 is back: the next attempt asks for both nodes again.
  sched_.SetNodeStates({node("n1", false), node("n2", true), node("n3", false)});
  clock_.Advance(61s);
  Tick();
  sched_.End(JobOf(id, 2), {}, 0, pb::END_REASON_PREEMPTED, "PREEMPTED");
  Tick();
  clock_.Advance(10min);
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 3u);
  EXPECT_EQ(sched_.submitted()[2].world_size, 2);
  EXPECT_EQ(Attempt(id, 3).world_size(), 2);
  EXPECT_EQ(sched_.submitted()[2].exclude_nodes, std::vector<std::string>{"n2"});
}

TEST_F(SupervisorTest, AnExcludedNodeIsReadmittedRatherThanStayingBelowMinNodes) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  spec_.resources.nodes = 2;
  spec_.resources.ranks_per_node = 1;
  spec_.resources.min_nodes = 2;
  sched::NodeState n1, n2;
  n1.name = "n1";
  n2.name = "n2";
  n1.state = n2.state = "IDLE";
  n1.partitions = n2.partitions = {"batch"};
  n1.in_default_partition = n2.in_default_partition = true;
  sched_.SetNodeStates({n1, n2});
  const std::string id = SubmitAndStart();
  sched_.SetNodes(JobOf(id, 1), {"n2"});
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "NODE_FAIL");
  Tick();
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 2u);
  EXPECT_EQ(sched_.submitted()[1].world_size, 2);
  EXPECT_TRUE(sched_.submitted()[1].exclude_nodes.empty());
  EXPECT_TRUE(store::ListNodes(store_).value()[1].excluded());  // the record still says so
  EXPECT_TRUE(
      HasEvent(id,
               "attempt 2 uses excluded node n2 again: without it fewer than min_nodes = 2 nodes "
               "of the default partition are usable"));
}

TEST_F(SupervisorTest, APresubmittedJobIsTakenOverAfterATimeLimit) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  spec_.resources.presubmit = true;
  sched_.set_start_queued(true);
  const std::string id = SubmitAndStart();
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 1u) << "nothing presubmitted before attempt 1 runs";
  sched_.SetState(JobOf(id, 1), sched::JobState::kRunning);
  Tick();  // attempt 1 runs
  Tick();  // attempt 2's job goes into the queue behind it
  ASSERT_EQ(sched_.submitted().size(), 2u);
  const sched::JobSpec& next = sched_.submitted()[1];
  EXPECT_EQ(next.attempt, 2);
  EXPECT_EQ(next.after_job, JobOf(id, 1));
  EXPECT_TRUE(Has(next.command, "--resume-from-coordinator"));
  EXPECT_FALSE(Has(next.command, "--resume"));
  const std::string token = EnvOf(next, "BELAY_TOKEN");
  EXPECT_EQ(token.size(), 64u);
  EXPECT_NE(token, EnvOf(sched_.submitted()[0], "BELAY_TOKEN"));
  // Its ranks may start before attempt 1's job is seen to end: they are told to wait.
  EXPECT_FALSE(sup_->AttemptOfToken(token).has_value());
  EXPECT_TRUE(sup_->IsWaitingSuccessorToken(token));
  const std::string successor = Attempt(id, 1).successor_job_id();
  EXPECT_FALSE(successor.empty());
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 2u) << "presubmitted once";

  Steps(id, 1, 1, 30);
  Save(id, 1, 30);
  Finish(id, 1, pb::EXIT_KIND_TIME_LIMIT_CHECKPOINTED);
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_TIME_LIMIT, "TIMEOUT");
  Tick();  // attempt 1 ends, attempt 2 takes the presubmitted job
  Tick();
  EXPECT_EQ(sched_.submitted().size(), 2u) << "no new submission";
  pb::Attempt a2 = Attempt(id, 2);
  EXPECT_TRUE(a2.presubmitted());
  EXPECT_EQ(a2.scheduler_job_id(), successor);
  EXPECT_EQ(a2.start_checkpoint_step(), 30);
  EXPECT_NE(a2.state(), pb::ATTEMPT_STATE_QUEUED);
  const std::string resume_dir = ckpt::StepDir(spec_.checkpoint.dir, id, 30).string();
  EXPECT_EQ(sup_->AttemptOfToken(token), (Supervisor::AttemptRef{id, 2, 2, resume_dir}));
  EXPECT_FALSE(sup_->IsWaitingSuccessorToken(token));
  EXPECT_TRUE(
      HasEvent(id, Cat("attempt 2 takes over job ", successor, ", presubmitted during attempt 1")));
  EXPECT_TRUE(sched_.signals().empty());
}

TEST_F(SupervisorTest, APresubmittedJobIsCancelledWhenTheNextAttemptMustDiffer) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  spec_.resources.presubmit = true;
  const std::string id = SubmitAndStart();
  sched_.SetNodes(JobOf(id, 1), {"n1", "n2"});
  Tick();
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 2u);
  const std::string successor = Attempt(id, 1).successor_job_id();
  const std::string token = EnvOf(sched_.submitted()[1], "BELAY_TOKEN");
  // A node failure: the next attempt must avoid the node, so the queued job goes.
  sched_.SetNodes(JobOf(id, 1), {"n2"});
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "NODE_FAIL");
  Tick();
  EXPECT_TRUE(std::find(sched_.signals().begin(), sched_.signals().end(),
                        std::pair{successor, SIGKILL}) != sched_.signals().end());
  EXPECT_FALSE(sup_->IsWaitingSuccessorToken(token));
  EXPECT_FALSE(sup_->AttemptOfToken(token).has_value());
  Tick();
  ASSERT_GE(sched_.submitted().size(), 3u);
  const sched::JobSpec& fresh = sched_.submitted()[2];
  EXPECT_EQ(fresh.attempt, 2);
  EXPECT_EQ(fresh.exclude_nodes, std::vector<std::string>{"n2"});
  EXPECT_NE(EnvOf(fresh, "BELAY_TOKEN"), token);
  EXPECT_FALSE(Attempt(id, 2).presubmitted());
  EXPECT_TRUE(HasEvent(
      id, Cat("presubmitted job ", successor, " cancelled: attempt 1 ended node_failure")));

  // The campaign's end cancels the one presubmitted during attempt 2 as well.
  Tick();
  Tick();
  ASSERT_EQ(sched_.submitted().size(), 4u);
  const std::string second = Attempt(id, 2).successor_job_id();
  ASSERT_FALSE(second.empty());
  Steps(id, 2, 1, 100);
  Finish(id, 2, pb::EXIT_KIND_COMPLETED);
  sched_.End(JobOf(id, 2));
  Tick();
  EXPECT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_COMPLETED);
  EXPECT_EQ(sched_.signals().back(), (std::pair{second, SIGKILL}));
}

TEST_F(SupervisorTest, APersistentlySlowRankLowersItsNodesReputation) {
  const std::string id = RunWithASlowRank(30, 0.2);
  ASSERT_FALSE(id.empty());
  std::vector<pb::Node> nodes = store::ListNodes(store_).value();
  ASSERT_EQ(nodes.size(), 4u);
  for (const pb::Node& n : nodes) {
    EXPECT_EQ(n.slow_attempts(), n.name() == "n2" ? 1 : 0) << n.name();
    EXPECT_EQ(n.failures_attributed(), 0) << n.name();
    EXPECT_FALSE(n.excluded()) << n.name();
  }
  EXPECT_NEAR(nodes[2].reputation(), std::exp(-kSlowRankWeight), 1e-9);
  EXPECT_TRUE(HasEvent(
      id,
      "node n2: rank 2 (0.2 s) computed persistently slower than the ranks' median of 0.102 s "
      "per step in attempt 1"));
}

TEST_F(SupervisorTest, ASlowRankIsFoundAcrossARestartOfBelayd) {
  // The ranks' nodes (their registrations) and step times come back from the store.
  ASSERT_FALSE(RunWithASlowRank(30, 0.2, /*restart_midway=*/true).empty());
  std::vector<pb::Node> nodes = store::ListNodes(store_).value();
  ASSERT_EQ(nodes.size(), 4u);
  for (const pb::Node& n : nodes)
    EXPECT_EQ(n.slow_attempts(), n.name() == "n2" ? 1 : 0) << n.name();
}

TEST_F(SupervisorTest, ASlowRankIsFoundAcrossARestartFromRecordsThatDoNotGrowWithTheSteps) {
  // 1000 ranks: the per-step records hold no per-rank arrays and the attempt record no rank
  // nodes; the slow-rank sums are one record per attempt, written at a bounded rate.
  const std::string id = RunWithASlowRank(30, 0.2, /*restart_midway=*/true, /*ranks=*/1000);
  ASSERT_FALSE(id.empty());
  const std::vector<pb::Node> nodes = store::ListNodes(store_).value();
  ASSERT_EQ(nodes.size(), 1000u);
  for (const pb::Node& n : nodes)
    EXPECT_EQ(n.slow_attempts(), n.name() == "n2" ? 1 : 0) << n.name();
  EXPECT_EQ(Attempt(id, 1).rank_nodes_size(), 0);
  EXPECT_LT(Attempt(id, 1).ByteSizeLong(), 8u * 1024)
      << "its 1000 nodes, without 1000 ranks' registrations";
  size_t metrics_bytes = 0;
  const store::Entries metrics = store_.Scan(store::Table::kMetrics, {}).value();
  for (const auto& [k, v] : metrics) metrics_bytes += k.size() + v.size();
  EXPECT_LT(metrics_bytes, 30u * 1024) << "30 steps of 1000 ranks' times would be 240 KB";
  const pb::RankTimeSums sums = store::GetRankTimeSums(store_, id, 1).value().value();
  EXPECT_EQ(sums.compute_time_sum_s_size(), 1000);
  EXPECT_EQ(sums.through_step(), 30) << "written once more when the attempt ended";
}

TEST_F(SupervisorTest, AStepRecordOfAHundredThousandRanksIsStoredAsASummary) {
  const std::string id = SubmitAndStart();
  Tick();
  pb::StepMetrics m;
  m.set_step(1);
  m.set_loss(3.0);
  m.set_step_time_s(2.0);
  for (int r = 0; r < 100000; ++r) {
    m.add_rank_step_time_s(2.0);
    m.add_rank_compute_time_s(r == 4242 ? 1.9 : 1.0 + 1e-6 * r);
  }
  ASSERT_TRUE(sup_->OnStep(id, 1, m).ok());
  const std::vector<pb::StepMetrics> stored = store::ListStepMetrics(store_, id, 0, -1).value();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_LT(stored[0].ByteSizeLong(), 1024u);
  EXPECT_EQ(stored[0].rank_compute_time_s_size(), 0);
  EXPECT_EQ(stored[0].rank_step_time_s_size(), 0);
  const pb::RankTimeSummary& s = stored[0].rank_compute_summary();
  EXPECT_EQ(s.ranks(), 100000);
  ASSERT_EQ(s.slowest_size(), kSummarySlowest);
  EXPECT_EQ(s.slowest(0).rank(), 4242);
  EXPECT_EQ(s.slowest(1).rank(), 99999);
  EXPECT_DOUBLE_EQ(s.max_s(), 1.9);
  EXPECT_DOUBLE_EQ(s.min_s(), 1.0);
  EXPECT_NEAR(s.median_s(), 1.05, 1e-3);
  EXPECT_DOUBLE_EQ(stored[0].rank_step_summary().median_s(), 2.0);
  EXPECT_LT(Attempt(id, 1).ByteSizeLong(), 1024u);
}

TEST_F(SupervisorTest, AFailedAttemptKeepsItsLastStepReportsWholeAsEvidence) {
  const std::string id = SubmitAndStart();
  Tick();
  for (int64_t step = 1; step <= 10; ++step) {
    pb::StepMetrics m;
    m.set_step(step);
    m.set_loss(step == 10 ? std::nan("") : 3.0);
    for (int r = 0; r < 2; ++r) m.add_rank_compute_time_s(0.1 * (r + 1));
    ASSERT_TRUE(sup_->OnStep(id, 1, m).ok());
  }
  Tick();
  ASSERT_EQ(Attempt(id, 1).end_reason(), pb::END_REASON_NAN);
  const std::vector<pb::StepMetrics> evidence = store::ListStepEvidence(store_, id, 1).value();
  ASSERT_EQ(evidence.size(), 4u) << "the last evidence_steps reports";
  for (size_t i = 0; i < evidence.size(); ++i) {
    EXPECT_EQ(evidence[i].step(), static_cast<int64_t>(7 + i));
    ASSERT_EQ(evidence[i].rank_compute_time_s_size(), 2);
    EXPECT_DOUBLE_EQ(evidence[i].rank_compute_time_s(1), 0.2);
  }
}

TEST_F(SupervisorTest, AFewSlowStepsAreNoEvidence) {
  ASSERT_FALSE(RunWithASlowRank(10, 0.5).empty());  // fewer steps than slow_min_steps
  const std::vector<pb::Node> nodes = store::ListNodes(store_).value();
  EXPECT_EQ(nodes.size(), 4u);
  for (const pb::Node& n : nodes) EXPECT_EQ(n.slow_attempts(), 0) << n.name();
}

TEST_F(SupervisorTest, LocalCampaignsKeepNoNodeRecords) {
  const std::string id = SubmitAndStart();
  Tick();
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "lost");
  Tick();
  EXPECT_TRUE(store::ListNodes(store_).value().empty());
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
  absl::StatusOr<pb::Campaign> c = sup_->Submit(spec_, kSpec, "tiny.toml", 1000, "u");
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
