// LocalScheduler with real processes: one rank and several under mpirun, per-rank logs and
// exits, signals to the whole job, and a second scheduler (a restarted belayd) finding jobs.
#include "daemon/scheduler/local_scheduler.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "daemon/scheduler/rank_files.h"
#include "gtest/gtest.h"

namespace belay::sched {
namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

class LocalSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("belay_local_sched_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    options_.jobs_dir = dir_ / "jobs";
  }
  void TearDown() override { fs::remove_all(dir_); }

  JobSpec Job(int world_size, std::string script) {
    JobSpec j;
    j.campaign_id = "c-1";
    j.attempt = 1;
    j.world_size = world_size;
    j.command = {"/bin/sh", "-c", std::move(script)};
    j.log_dir = dir_ / "logs";
    return j;
  }

  static JobStatus PollOne(Scheduler& s, const std::string& id) {
    absl::StatusOr<std::vector<JobStatus>> st = s.Poll({id});
    EXPECT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->size(), 1u);
    return st->front();
  }

  static JobStatus WaitEnded(Scheduler& s, const std::string& id) {
    auto deadline = steady_clock::now() + std::chrono::seconds(30);
    JobStatus st;
    do {
      st = PollOne(s, id);
      if (st.state == JobState::kEnded) return st;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (steady_clock::now() < deadline);
    ADD_FAILURE() << "job " << id << " did not end";
    return st;
  }

  std::string Log(int rank) {
    char name[32];
    std::snprintf(name, sizeof name, "rank_%05d.log", rank);
    std::ifstream in(dir_ / "logs" / name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  void WaitForLog(int rank, const std::string& text) {
    auto deadline = steady_clock::now() + std::chrono::seconds(30);
    while (Log(rank).find(text) == std::string::npos) {
      ASSERT_LT(steady_clock::now(), deadline) << "rank " << rank << " never logged " << text;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  fs::path dir_;
  LocalSchedulerOptions options_;
};

TEST_F(LocalSchedulerTest, OneRankRunsWithItsEnvironmentAndReportsItsExit) {
  LocalScheduler s(options_);
  JobSpec job = Job(1, "echo rank=$BELAY_RANK of=$BELAY_WORLD_SIZE token=$BELAY_TOKEN; exit 3");
  job.env = {{"BELAY_TOKEN", "t0k3n"}};
  absl::StatusOr<std::string> id = s.Submit(job);
  ASSERT_TRUE(id.ok()) << id.status();
  JobStatus st = WaitEnded(s, *id);
  ASSERT_EQ(st.ranks.size(), 1u);
  EXPECT_EQ(st.ranks[0].exit_code, 3);
  EXPECT_EQ(st.ranks[0].signal, 0);
  EXPECT_EQ(st.reason, pb::END_REASON_UNSPECIFIED);
  EXPECT_NE(st.message.find("exited with status 3"), std::string::npos) << st.message;
  EXPECT_EQ(Log(0), "rank=0 of=1 token=t0k3n\n");
}

TEST_F(LocalSchedulerTest, SeveralRanksRunUnderMpirunEachWithItsOwnLog) {
  LocalScheduler s(options_);
  absl::StatusOr<std::string> id = s.Submit(
      Job(3, "echo \"rank $OMPI_COMM_WORLD_RANK of $OMPI_COMM_WORLD_SIZE log $BELAY_LOG_DIR\""));
  ASSERT_TRUE(id.ok()) << id.status();
  JobStatus st = WaitEnded(s, *id);
  ASSERT_EQ(st.ranks.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(st.ranks[static_cast<size_t>(r)].exit_code, 0) << "rank " << r;
    EXPECT_EQ(Log(r), "rank " + std::to_string(r) + " of 3 log " + (dir_ / "logs").string() + "\n");
  }
}

// (belayd as root runs a campaign's ranks as its owner.)
TEST_F(LocalSchedulerTest, RanksRunAsTheUserTheJobNames) {
  if (::geteuid() != 0) GTEST_SKIP() << "starting ranks as another user needs root";
  const passwd* pw = ::getpwnam("nobody");
  ASSERT_NE(pw, nullptr);
  const uid_t uid = pw->pw_uid;
  const gid_t gid = pw->pw_gid;
  const std::string want =
      absl::StrCat("uid=", uid, " gid=", gid, " home=", pw->pw_dir, " user=", pw->pw_name, "\n");
  LocalScheduler s(options_);
  for (int world : {1, 2}) {  // directly, and mpirun itself as that user
    SCOPED_TRACE(world);
    JobSpec job = Job(world, "echo \"uid=$(id -u) gid=$(id -g) home=$HOME user=$USER\"");
    job.attempt = world;
    job.run_as_uid = uid;
    absl::StatusOr<std::string> id = s.Submit(job);
    ASSERT_TRUE(id.ok()) << id.status();
    JobStatus st = WaitEnded(s, *id);
    ASSERT_EQ(st.ranks.size(), static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(st.ranks[static_cast<size_t>(r)].exit_code, 0) << "rank " << r << ": " << Log(r);
      EXPECT_EQ(Log(r), want) << "rank " << r;
    }
    struct stat dir {};
    ASSERT_EQ(::stat((dir_ / "logs").c_str(), &dir), 0);
    EXPECT_EQ(dir.st_uid, uid);  // the ranks' log directory is theirs
  }
  // belayd's own uid: no switch (and no need for a passwd entry's help).
  JobSpec self = Job(1, "id -u");
  self.attempt = 3;
  self.run_as_uid = ::geteuid();
  absl::StatusOr<std::string> id = s.Submit(self);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(WaitEnded(s, *id).ranks.at(0).exit_code, 0);
  EXPECT_EQ(Log(0), std::to_string(::geteuid()) + "\n");
  // A user who may not enter the directories above its log directory: refused, naming them.
  fs::permissions(dir_, fs::perms::owner_all);
  JobSpec shut_out = Job(1, "true");
  shut_out.attempt = 5;
  shut_out.run_as_uid = uid;
  absl::StatusOr<std::string> kept_out = s.Submit(shut_out);
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  EXPECT_EQ(kept_out.status().code(), absl::StatusCode::kFailedPrecondition) << kept_out.status();
  EXPECT_NE(kept_out.status().message().find("may not enter " + dir_.string()), std::string::npos)
      << kept_out.status();
  // A uid without a passwd entry: refused, with the reason.
  JobSpec stranger = Job(1, "true");
  stranger.attempt = 4;
  stranger.run_as_uid = 3999999;
  absl::StatusOr<std::string> refused = s.Submit(stranger);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("no passwd entry"), std::string::npos)
      << refused.status();
}

// A job of another user inherits of belayd's environment only what PassedToOtherUsers allows
// (belayd's session, credentials and library paths stay belayd's), plus what belay sets.
TEST_F(LocalSchedulerTest, AnotherUsersRanksGetOnlyTheAllowedPartOfBelaydsEnvironment) {
  if (::geteuid() != 0) GTEST_SKIP() << "starting ranks as another user needs root";
  const passwd* pw = ::getpwnam("nobody");
  ASSERT_NE(pw, nullptr);
  ::setenv("AWS_SECRET_ACCESS_KEY", "belayds-own-secret", 1);
  ::setenv("KRB5CCNAME", "FILE:/tmp/krb5cc_0", 1);
  ::setenv("LC_TIME", "C.UTF-8", 1);
  LocalScheduler s(options_);
  JobSpec job = Job(1, "env");
  job.run_as_uid = pw->pw_uid;
  job.env = {{"BELAY_CAMPAIGN", "c-1"}};
  absl::StatusOr<std::string> id = s.Submit(job);
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  ::unsetenv("KRB5CCNAME");
  ::unsetenv("LC_TIME");
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_EQ(WaitEnded(s, *id).ranks.at(0).exit_code, 0);
  const std::string env = Log(0);
  EXPECT_EQ(env.find("belayds-own-secret"), std::string::npos) << env;
  EXPECT_EQ(env.find("KRB5CCNAME"), std::string::npos) << env;
  EXPECT_NE(env.find("LC_TIME=C.UTF-8"), std::string::npos) << env;
  EXPECT_NE(env.find("PATH="), std::string::npos) << env;
  EXPECT_NE(env.find("BELAY_CAMPAIGN=c-1"), std::string::npos) << env;
  EXPECT_NE(env.find(std::string("HOME=") + pw->pw_dir), std::string::npos) << env;
}

// The files a job reads (the campaign spec) are in its log directory, which only the job's
// user may enter; a name the user pointed elsewhere is replaced, not written through.
TEST_F(LocalSchedulerTest, JobFilesAreWrittenIntoAPrivateLogDirectory) {
  LocalScheduler s(options_);
  fs::create_directories(dir_ / "logs");
  fs::permissions(dir_ / "logs", fs::perms::all);  // an older belayd's, open to all
  std::ofstream(dir_ / "elsewhere") << "untouched";
  fs::create_symlink(dir_ / "elsewhere", dir_ / "logs" / "spec.toml");
  JobSpec job = Job(1, "cat \"$BELAY_LOG_DIR/spec.toml\"");
  job.files = {{"spec.toml", "name = \"x\"\n"}};
  absl::StatusOr<std::string> id = s.Submit(job);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(WaitEnded(s, *id).ranks.at(0).exit_code, 0);
  EXPECT_EQ(Log(0), "name = \"x\"\n");
  EXPECT_EQ(fs::status(dir_ / "logs").permissions(), fs::perms::owner_all);
  EXPECT_FALSE(fs::is_symlink(dir_ / "logs" / "spec.toml"));
  std::ifstream in(dir_ / "elsewhere");
  std::string kept;
  std::getline(in, kept);
  EXPECT_EQ(kept, "untouched");
  JobSpec bad = Job(1, "true");
  bad.attempt = 2;
  bad.files = {{"../escape", "x"}};
  EXPECT_EQ(s.Submit(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// The log directory may be the job's user's: belayd reads an exit file only if it is a regular
// file (not a symlink to one of root's files, not a FIFO it would wait on for ever).
TEST_F(LocalSchedulerTest, ExitFilesAreReadOnlyWhenTheyAreRegularFiles) {
  fs::create_directories(dir_ / "logs");
  { std::ofstream(dir_ / "target") << "7\n"; }
  fs::create_symlink(dir_ / "target", RankFile(dir_ / "logs", 0, "exit"));
  ASSERT_EQ(::mkfifo(RankFile(dir_ / "logs", 1, "exit").c_str(), 0644), 0);
  { std::ofstream(RankFile(dir_ / "logs", 2, "exit")) << "137\n"; }
  { std::ofstream(RankFile(dir_ / "logs", 3, "exit")) << "garbage\n"; }
  EXPECT_EQ(ReadRankEnd(dir_ / "logs", 0, "n"), (RankEnd{0, std::nullopt, 0, "n"}));  // the symlink
  EXPECT_EQ(ReadRankEnd(dir_ / "logs", 1, "n"),
            (RankEnd{1, std::nullopt, 0, "n"}));  // the FIFO, at once
  EXPECT_EQ(ReadRankEnd(dir_ / "logs", 2, "n"),
            (RankEnd{2, std::nullopt, 9, "n"}));  // killed by SIGKILL
  EXPECT_EQ(ReadRankEnd(dir_ / "logs", 3, "n"), (RankEnd{3, std::nullopt, 0, "n"}));
  EXPECT_EQ(ReadRankEnd(dir_ / "logs", 4, "n"), (RankEnd{4, std::nullopt, 0, "n"}));  // none
}

TEST_F(LocalSchedulerTest, ARankKilledByASignalIsReportedAsSuch) {
  LocalScheduler s(options_);
  absl::StatusOr<std::string> id =
      s.Submit(Job(2, "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then kill -KILL $$; fi; sleep 30"));
  ASSERT_TRUE(id.ok()) << id.status();
  JobStatus st = WaitEnded(s, *id);  // mpirun ends the job when a rank fails
  ASSERT_EQ(st.ranks.size(), 2u);
  EXPECT_EQ(st.ranks[1].signal, SIGKILL);
  EXPECT_FALSE(st.ranks[1].exit_code.has_value());
}

TEST_F(LocalSchedulerTest, SigusrReachesEveryRankOfTheJob) {
  LocalScheduler s(options_);
  absl::StatusOr<std::string> id = s.Submit(
      Job(2, "trap 'echo stopping; exit 0' USR1; echo ready; while :; do sleep 0.1; done"));
  ASSERT_TRUE(id.ok()) << id.status();
  WaitForLog(0, "ready");
  WaitForLog(1, "ready");
  EXPECT_EQ(PollOne(s, *id).state, JobState::kRunning);
  ASSERT_TRUE(s.Signal(*id, SIGUSR1).ok());
  JobStatus st = WaitEnded(s, *id);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(st.ranks[static_cast<size_t>(r)].exit_code, 0) << "rank " << r;
    EXPECT_NE(Log(r).find("stopping"), std::string::npos) << Log(r);
  }
  EXPECT_TRUE(s.Signal(*id, SIGKILL).ok()) << "signalling an ended job is not an error";
}

TEST_F(LocalSchedulerTest, SigkillEndsTheJobAndLeavesNoProcessBehind) {
  LocalScheduler s(options_);
  absl::StatusOr<std::string> id = s.Submit(Job(2, "echo up; exec sleep 1000"));
  ASSERT_TRUE(id.ok()) << id.status();
  WaitForLog(0, "up");
  WaitForLog(1, "up");
  const pid_t leader = static_cast<pid_t>(std::stol(id->substr(0, id->find('-'))));
  ASSERT_TRUE(s.Signal(*id, SIGKILL).ok());
  JobStatus st = WaitEnded(s, *id);
  EXPECT_NE(st.message.find("killed by signal 9"), std::string::npos) << st.message;
  // Nothing of the job's session is left.
  auto deadline = steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    int left = 0;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      pid_t pid = static_cast<pid_t>(std::stol(name));
      if (::getsid(pid) != leader) continue;
      std::ifstream stat(e.path() / "stat");
      std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
      size_t close = text.rfind(')');
      if (close != std::string::npos && close + 2 < text.size() && text[close + 2] == 'Z')
        continue;  // dead, unreaped
      ++left;
    }
    if (left == 0) break;
    ASSERT_LT(steady_clock::now(), deadline) << left << " processes of the job still exist";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

TEST_F(LocalSchedulerTest, ARestartedSchedulerFindsAndSignalsJobsStartedBefore) {
  std::string id;
  {
    LocalScheduler first(options_);
    absl::StatusOr<std::string> submitted = first.Submit(
        Job(1, "trap 'echo stopping; exit 4' USR1; echo ready; while :; do sleep 0.1; done"));
    ASSERT_TRUE(submitted.ok()) << submitted.status();
    id = *submitted;
  }  // "belayd exits"; the job goes on
  WaitForLog(0, "ready");
  LocalScheduler second(options_);
  EXPECT_EQ(PollOne(second, id).state, JobState::kRunning);
  ASSERT_TRUE(second.Signal(id, SIGUSR1).ok());
  JobStatus st = WaitEnded(second, id);
  ASSERT_EQ(st.ranks.size(), 1u);
  EXPECT_EQ(st.ranks[0].exit_code, 4);  // from the rank's exit file, not from waitpid
  EXPECT_NE(st.message.find("not watching"), std::string::npos) << st.message;
}

TEST_F(LocalSchedulerTest, SubmittingTheSameAttemptAgainReturnsTheJobAlreadyStarted) {
  std::string id;
  {
    LocalScheduler first(options_);
    id = first.Submit(Job(1, "echo once >> \"$BELAY_LOG_DIR/runs\"; sleep 0.3")).value();
  }
  LocalScheduler second(options_);  // a belayd that crashed before recording the id
  EXPECT_EQ(second.Submit(Job(1, "echo once >> \"$BELAY_LOG_DIR/runs\"; sleep 0.3")).value(), id);
  JobSpec next = Job(1, "true");
  next.attempt = 2;
  EXPECT_NE(second.Submit(next).value(), id);
  WaitEnded(second, id);
  std::ifstream runs(dir_ / "logs" / "runs");
  std::string all((std::istreambuf_iterator<char>(runs)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "once\n");
}

TEST_F(LocalSchedulerTest, UnknownAndMalformedIdsAreUnknownNotErrors) {
  LocalScheduler s(options_);
  absl::StatusOr<std::vector<JobStatus>> st = s.Poll({"999999-1", "../etc/passwd", ""});
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->size(), 3u);
  for (const JobStatus& j : *st) EXPECT_EQ(j.state, JobState::kUnknown) << j.job_id;
  EXPECT_TRUE(absl::IsNotFound(s.Signal("999999-1", SIGKILL)));
  JobSpec bad = Job(0, "true");
  EXPECT_TRUE(absl::IsInvalidArgument(s.Submit(bad).status()));
}

}  // namespace
}  // namespace belay::sched
