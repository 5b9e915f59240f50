// SlurmScheduler against a real Slurm cluster: the local cluster of deploy/local-cluster
// (started by the ctest fixture slurm.cluster; SLURM_CONF names it). Jobs are tiny shell
// commands run under mpirun across two virtual nodes.
#include "daemon/scheduler/slurm_scheduler.h"

#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/strings.h"
#include "daemon/scheduler/mpi_sandbox.h"
#include "gtest/gtest.h"

namespace belay::sched {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class SlurmSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* conf = std::getenv("SLURM_CONF");
    if (conf == nullptr || !fs::exists(conf))
      GTEST_SKIP() << "SLURM_CONF names no cluster (ctest starts one)";
    dir_ = fs::temp_directory_path() /
           ("belay_slurm_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    SlurmSchedulerOptions o;
    o.conf = conf;
    o.min_poll_interval = 200ms;
    o.mpi_env = MpiSandboxEnvironment(MpiSandbox::kNodes);
    sched_ = std::make_unique<SlurmScheduler>(o);
  }
  void TearDown() override {
    for (const std::string& id : started_) sched_->Signal(id, SIGKILL).IgnoreError();
    fs::remove_all(dir_);
  }

  JobSpec Job(int32_t attempt, std::vector<std::string> command, int world = 2) {
    JobSpec j;
    j.campaign_id = Cat("slurmtest-", ::getpid());
    j.attempt = attempt;
    j.world_size = world;
    j.ranks_per_node = 1;
    j.command = std::move(command);
    j.log_dir = dir_ / ("attempt_" + std::to_string(attempt));
    j.env = {{"BELAY_TOKEN", "t0k3n"}};
    return j;
  }
  std::string Submit(const JobSpec& j) {
    absl::StatusOr<std::string> id = sched_->Submit(j);
    EXPECT_TRUE(id.ok()) << id.status();
    if (id.ok()) started_.push_back(*id);
    return id.value_or("");
  }
  // Submits j, then again: the second submission finds the job of the first (idempotent).
  std::string SubmitTwice(const JobSpec& j) {
    const std::string id = Submit(j);
    absl::StatusOr<std::string> again = sched_->Submit(j);
    EXPECT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again.value_or(""), id);
    return id;
  }
  // Polls until the job is in `want` (or ended), for up to `limit`.
  JobStatus WaitFor(const std::string& id, JobState want, std::chrono::seconds limit = 120s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    JobStatus last;
    while (std::chrono::steady_clock::now() < deadline) {
      absl::StatusOr<std::vector<JobStatus>> st = sched_->Poll({id});
      if (st.ok()) {
        last = (*st)[0];
        if (last.state == want || last.state == JobState::kEnded) return last;
      }
      std::this_thread::sleep_for(300ms);
    }
    ADD_FAILURE() << "job " << id << " never reached " << JobStateName(want)
                  << "; last: " << last.message;
    return last;
  }

  fs::path dir_;
  std::unique_ptr<SlurmScheduler> sched_;
  std::vector<std::string> started_;
};

TEST_F(SlurmSchedulerTest, AJobRunsItsRanksAcrossNodesAndReportsTheirExits) {
  const JobSpec j =
      Job(1, {"/bin/sh", "-c", "echo \"rank $OMPI_COMM_WORLD_RANK token $BELAY_TOKEN\"; exit 3"});
  const std::string id = SubmitTwice(j);  // the same attempt again: the same job, not a second one
  ASSERT_FALSE(id.empty());
  const JobStatus st = WaitFor(id, JobState::kEnded);
  ASSERT_EQ(st.state, JobState::kEnded) << st.message;
  EXPECT_EQ(st.reason, pb::END_REASON_UNSPECIFIED)
      << st.message;  // FAILED: the ranks' exits decide
  EXPECT_EQ(st.nodes.size(), 2u) << st.message;
  ASSERT_EQ(st.ranks.size(), 2u);
  for (const RankEnd& e : st.ranks) {
    EXPECT_EQ(e.exit_code, 3) << "rank " << e.rank;
  }
  std::ifstream log(j.log_dir / "rank_00001.log");
  std::string line;
  std::getline(log, line);
  EXPECT_EQ(line, "rank 1 token t0k3n");
}

// (belayd as root submits a campaign's jobs as its owner.)
TEST_F(SlurmSchedulerTest, AJobRunsAsTheUserItNames) {
  if (::geteuid() != 0) GTEST_SKIP() << "submitting as another user needs root (or SlurmUser)";
  const passwd* pw = ::getpwnam("nobody");
  ASSERT_NE(pw, nullptr);
  JobSpec j = Job(1, {"/bin/sh", "-c",
                      "echo \"rank $OMPI_COMM_WORLD_RANK uid=$(id -u) gid=$(id -g) user=$USER\""});
  j.run_as_uid = pw->pw_uid;
  const std::string id = SubmitTwice(j);  // the second time found as that user's job
  ASSERT_FALSE(id.empty());
  const JobStatus st = WaitFor(id, JobState::kEnded);
  ASSERT_EQ(st.ranks.size(), 2u) << st.message;
  for (const RankEnd& e : st.ranks) {
    EXPECT_EQ(e.exit_code, 0) << "rank " << e.rank << ": " << st.message;
    std::ifstream log(j.log_dir / Cat("rank_0000", e.rank, ".log"));
    std::string line;
    std::getline(log, line);
    EXPECT_EQ(line, Cat("rank ", e.rank, " uid=", pw->pw_uid, " gid=", pw->pw_gid,
                        " user=", pw->pw_name));
  }
}

TEST_F(SlurmSchedulerTest, RanksStartedWithSrunGetTheirRankFromSlurmAndUsr1) {
  // As GPU ranks are started (one srun task per rank, no MPI), here without GPUs. Each rank
  // sets its USR1 trap, reports its rank and local id (the test signals once it reads them,
  // so the trap must already be set), then waits for USR1. Rank 0 then exits 0; rank 1 waits
  // until rank 0's exit is recorded and exits 11. (A rank that failed first would make srun
  // kill the other, --kill-on-bad-exit, before its trap ran: it would end without an exit code.)
  JobSpec j = Job(
      1, {"/bin/sh", "-c",
          "trap 'echo usr1; [ \"$SLURM_PROCID\" = 0 ] && exit 0; "
          "while [ ! -e \"$BELAY_LOG_DIR/rank_00000.exit\" ]; do sleep 0.05; done; exit 11' USR1; "
          "echo \"rank $SLURM_PROCID of $SLURM_NTASKS local $SLURM_LOCALID\"; "
          "while :; do sleep 0.2; done"});
  j.srun = true;
  const std::string id = Submit(j);
  ASSERT_FALSE(id.empty());
  WaitFor(id, JobState::kRunning);
  for (int r = 0; r < 2; ++r) {
    const fs::path log = j.log_dir / Cat("rank_0000", r, ".log");
    for (int i = 0; i < 100 && (!fs::exists(log) || fs::file_size(log) == 0); ++i)
      std::this_thread::sleep_for(100ms);
    std::ifstream in(log);
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, Cat("rank ", r, " of 2 local 0"));
  }
  ASSERT_TRUE(sched_->Signal(id, SIGUSR1).ok());
  const JobStatus st = WaitFor(id, JobState::kEnded);
  ASSERT_EQ(st.ranks.size(), 2u) << st.message;
  for (const RankEnd& e : st.ranks) {
    EXPECT_EQ(e.exit_code, e.rank == 0 ? 0 : 11) << "rank " << e.rank;
    // (The shell may also say that the signal ended its `sleep`.)
    std::ifstream in(j.log_dir / Cat("rank_0000", e.rank, ".log"));
    bool trapped = false;
    for (std::string line; std::getline(in, line);) trapped = trapped || line == "usr1";
    EXPECT_TRUE(trapped) << "rank " << e.rank << " did not log its USR1 trap";
  }
}

TEST_F(SlurmSchedulerTest, Usr1ReachesEveryRankThroughTheBatchShell) {
  // Rank 0 exits 0 on USR1; rank 1 exits 7 once rank 0's exit is recorded (mpirun ends the
  // job when a rank fails, and would kill a rank whose trap had not run yet).
  const std::string id =
      Submit(Job(2, {"/bin/sh", "-c",
                     "trap '[ \"$OMPI_COMM_WORLD_RANK\" = 0 ] && exit 0; "
                     "while [ ! -e \"$BELAY_LOG_DIR/rank_00000.exit\" ]; do sleep 0.05; done; "
                     "exit 7' USR1; echo ready; while :; do sleep 0.2; done"}));
  ASSERT_EQ(WaitFor(id, JobState::kRunning).state, JobState::kRunning);
  // Both ranks up (their logs say so) before the signal.
  const fs::path logs = dir_ / "attempt_2";
  for (int i = 0;
       i < 200 &&
       !(fs::exists(logs / "rank_00000.log") && fs::file_size(logs / "rank_00000.log") > 0 &&
         fs::exists(logs / "rank_00001.log") && fs::file_size(logs / "rank_00001.log") > 0);
       ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(sched_->Signal(id, SIGUSR1).ok());
  const JobStatus st = WaitFor(id, JobState::kEnded, 60s);
  ASSERT_EQ(st.state, JobState::kEnded) << st.message;
  ASSERT_EQ(st.ranks.size(), 2u);
  for (const RankEnd& e : st.ranks) {
    EXPECT_EQ(e.exit_code, e.rank == 0 ? 0 : 7) << "rank " << e.rank << ": " << st.message;
  }
}

TEST_F(SlurmSchedulerTest, SigkillCancelsAndPollingStaysWithinItsBudget) {
  const std::string id = Submit(Job(3, {"/bin/sleep", "300"}));
  ASSERT_EQ(WaitFor(id, JobState::kRunning).state, JobState::kRunning);
  // Many polls inside min_poll_interval cost one load.
  const int64_t before = sched_->rpcs();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(sched_->Poll({id, "999999"}).ok());
  EXPECT_LE(sched_->rpcs() - before, 2);
  ASSERT_TRUE(sched_->Signal(id, SIGKILL).ok());
  const JobStatus st = WaitFor(id, JobState::kEnded, 60s);
  EXPECT_EQ(st.reason, pb::END_REASON_CANCELLED_EXTERNALLY) << st.message;
  // An unknown id is unknown; a signal to an ended job is fine.
  absl::StatusOr<std::vector<JobStatus>> unknown = sched_->Poll({"999999"});
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ((*unknown)[0].state, JobState::kUnknown);
  EXPECT_TRUE(sched_->Signal(id, SIGKILL).ok());
}

TEST_F(SlurmSchedulerTest, ABudgetOfRpcsIsNeverExceeded) {
  SlurmSchedulerOptions o;
  o.conf = std::getenv("SLURM_CONF");
  o.min_poll_interval = 0ms;
  o.rpc_budget_per_minute = 5;
  SlurmScheduler tight(o);
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    if (absl::IsUnavailable(tight.Poll({"1"}).status())) ++refused;
  }
  EXPECT_EQ(tight.rpcs(), 5);
  EXPECT_EQ(refused, 15);
  EXPECT_EQ(tight.refused(), 15);
}

TEST_F(SlurmSchedulerTest, ARefusedSubmissionSaysWhy) {
  SlurmSchedulerOptions o;
  o.conf = std::getenv("SLURM_CONF");
  o.partition = "no-such-partition";
  SlurmScheduler bad(o);
  absl::StatusOr<std::string> id = bad.Submit(Job(4, {"/bin/true"}));
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kFailedPrecondition) << id.status();
  EXPECT_NE(id.status().message().find("artition"), std::string::npos) << id.status();
}

TEST_F(SlurmSchedulerTest, NodeStatesNameEachNodesPartitionsAndTheDefaultOne) {
  // The local cluster: n1..n3 in partition "debug", the default.
  absl::StatusOr<std::vector<NodeState>> nodes = sched_->NodeStates();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  ASSERT_EQ(nodes->size(), 3u);
  for (const NodeState& n : *nodes) {
    EXPECT_EQ(n.partitions, std::vector<std::string>{"debug"}) << n.name;
    EXPECT_TRUE(n.in_default_partition) << n.name;
    EXPECT_FALSE(n.down) << n.name << " " << n.state;
    EXPECT_FALSE(n.drain) << n.name << " " << n.state;
  }
  // The partition table is loaded once and kept: a second read is one call, not two.
  const int64_t before = sched_->controller_calls().made;
  ASSERT_TRUE(sched_->NodeStates().ok());
  EXPECT_EQ(sched_->controller_calls().made, before + 1);
}

}  // namespace
}  // namespace belay::sched
