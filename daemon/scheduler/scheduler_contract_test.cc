// The Scheduler contract (scheduler.h) as value-parameterized tests; each test binary
// instantiates it with its backends.
#include "daemon/scheduler/scheduler_contract_test.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/strings.h"

namespace belay::sched {

namespace fs = std::filesystem;

std::vector<std::string> RunsUntilSignalled() {
  return {"/bin/sh", "-c", "echo ready; while :; do sleep 0.1; done"};
}

std::vector<std::string> ExitsWith(int code) {
  return {"/bin/sh", "-c", Cat("echo exiting; exit ", code)};
}

std::string SchedulerContractParamName(
    const ::testing::TestParamInfo<SchedulerContractParam>& info) {
  return info.param.name;
}

void PrintTo(const SchedulerContractParam& param, std::ostream* os) { *os << param.name; }

void SchedulerContract::SetUp() {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  dir_ = fs::temp_directory_path() /
         Cat("belay_contract_", ::getpid(), "_", GetParam().name, "_", test->name());
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  std::string skip;
  backend_ = GetParam().make(dir_, &skip);
  if (!backend_) GTEST_SKIP() << skip;
}

void SchedulerContract::TearDown() {
  if (backend_) {
    for (const std::string& id : started_) backend_->scheduler().Signal(id, SIGKILL).IgnoreError();
  }
  backend_.reset();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

JobSpec SchedulerContract::Job(int32_t attempt, std::vector<std::string> command,
                               std::optional<int> world, const std::string& token) {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  JobSpec j;
  // Unique per run: a Slurm cluster keeps the jobs of earlier runs, found by this key.
  j.campaign_id = Cat("contract-", ::getpid(), "-", test->name());
  j.attempt = attempt;
  j.world_size = world.value_or(backend_->world_size());
  j.ranks_per_node = std::min(j.world_size, backend_->ranks_per_node());
  j.kind = backend_->kind();
  j.command = std::move(command);
  j.env = {{"BELAY_TOKEN", token}};
  j.log_dir = dir_ / Cat("attempt_", attempt, "_", token);
  return j;
}

std::string SchedulerContract::Submit(const JobSpec& job, Scheduler* s) {
  absl::StatusOr<std::string> id = (s ? *s : backend_->scheduler()).Submit(job);
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return "";
  started_.push_back(*id);
  return *id;
}

JobStatus SchedulerContract::WaitFor(const std::string& id, JobState want, Scheduler* s) {
  Scheduler& sched = s ? *s : backend_->scheduler();
  const auto deadline = std::chrono::steady_clock::now() + backend_->patience();
  JobStatus last;
  do {
    absl::StatusOr<std::vector<JobStatus>> st = sched.Poll({id});
    EXPECT_TRUE(st.ok()) << st.status();
    if (st.ok() && st->size() == 1) {
      last = st->front();
      if (last.state == want || last.state == JobState::kEnded) return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < deadline);
  ADD_FAILURE() << "job " << id << " never reached " << JobStateName(want) << " within "
                << backend_->patience().count() << " s; last: " << JobStateName(last.state) << ": "
                << last.message;
  return last;
}

JobStatus SchedulerContract::RunToEnd(const JobSpec& job, int exit_code, std::string* id) {
  *id = Submit(job);
  if (id->empty()) return {};
  backend_->RanksExit(*id, exit_code);
  const JobStatus st = WaitFor(*id, JobState::kEnded);
  EXPECT_EQ(st.state, JobState::kEnded) << st.message;
  return st;
}

namespace {

TEST_P(SchedulerContract, KindIsTheBackendsOwn) {
  EXPECT_EQ(backend_->scheduler().kind(), backend_->kind());
}

TEST_P(SchedulerContract, ASubmittedJobIsQueuedOrRunningUnderItsId) {
  const std::string id = Submit(Job(1, RunsUntilSignalled()));
  ASSERT_FALSE(id.empty());
  absl::StatusOr<std::vector<JobStatus>> st = backend_->scheduler().Poll({id});
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->size(), 1u);
  EXPECT_EQ(st->front().job_id, id);
  EXPECT_TRUE(st->front().state == JobState::kQueued || st->front().state == JobState::kRunning)
      << JobStateName(st->front().state) << ": " << st->front().message;
  EXPECT_EQ(WaitFor(id, JobState::kRunning).state, JobState::kRunning);
}

TEST_P(SchedulerContract, RanksThatExitEndTheJobWithTheirExitCodes) {
  const JobSpec job = Job(1, ExitsWith(0));
  std::string id;
  const JobStatus st = RunToEnd(job, 0, &id);
  ASSERT_EQ(st.state, JobState::kEnded) << st.message;
  // The scheduler cannot tell why ranks exited: the supervisor decides from their exits.
  EXPECT_EQ(st.reason, pb::END_REASON_UNSPECIFIED) << st.message;
  ASSERT_EQ(st.ranks.size(), static_cast<size_t>(job.world_size)) << st.message;
  for (size_t r = 0; r < st.ranks.size(); ++r) {
    EXPECT_EQ(st.ranks[r].rank, static_cast<int>(r));
    EXPECT_EQ(st.ranks[r].exit_code, 0) << "rank " << r << ": " << st.message;
    EXPECT_EQ(st.ranks[r].signal, 0) << "rank " << r;
  }
}

TEST_P(SchedulerContract, ARanksNonZeroExitCodeIsReportedAsItIs) {
  std::string id;
  const JobStatus st = RunToEnd(Job(1, ExitsWith(3), /*world=*/1), 3, &id);
  ASSERT_EQ(st.state, JobState::kEnded) << st.message;
  EXPECT_EQ(st.reason, pb::END_REASON_UNSPECIFIED) << st.message;
  ASSERT_EQ(st.ranks.size(), 1u) << st.message;
  EXPECT_EQ(st.ranks[0].exit_code, 3) << st.message;
}

TEST_P(SchedulerContract, PollAnswersOneStatusPerIdInTheOrderAsked) {
  const std::string a = Submit(Job(1, RunsUntilSignalled()));
  const std::string b = Submit(Job(2, RunsUntilSignalled()));
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  const std::string unknown = backend_->UnknownId();
  absl::StatusOr<std::vector<JobStatus>> st = backend_->scheduler().Poll({b, unknown, a});
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->size(), 3u);
  EXPECT_EQ((*st)[0].job_id, b);
  EXPECT_EQ((*st)[1].job_id, unknown);
  EXPECT_EQ((*st)[2].job_id, a);
  EXPECT_EQ((*st)[1].state, JobState::kUnknown) << (*st)[1].message;
  EXPECT_NE((*st)[0].state, JobState::kUnknown) << (*st)[0].message;
  EXPECT_NE((*st)[2].state, JobState::kUnknown) << (*st)[2].message;
  absl::StatusOr<std::vector<JobStatus>> none = backend_->scheduler().Poll({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

TEST_P(SchedulerContract, SubmittingTheSameAttemptAgainReturnsTheJobAlreadyStarted) {
  const JobSpec job = Job(1, RunsUntilSignalled());
  const std::string id = Submit(job);
  ASSERT_FALSE(id.empty());
  absl::StatusOr<std::string> again = backend_->scheduler().Submit(job);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, id);
  // A belayd that crashed before it recorded the id asks again.
  absl::StatusOr<std::string> restarted = backend_->Restarted().Submit(job);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_EQ(*restarted, id);
  // Another attempt, or the same attempt with a new token, is a job of its own.
  const std::string next = Submit(Job(2, RunsUntilSignalled()));
  EXPECT_NE(next, id);
  if (backend_->new_token_new_job()) {
    const std::string renewed = Submit(Job(1, RunsUntilSignalled(), {}, "n3w-t0k3n"));
    EXPECT_NE(renewed, id);
    EXPECT_NE(renewed, next);
  }
}

TEST_P(SchedulerContract, IdsAreNeverReusedForAnotherJob) {
  std::set<std::string> ids;
  for (int32_t attempt = 1; attempt <= 3; ++attempt) {
    std::string id;
    ASSERT_EQ(RunToEnd(Job(attempt, ExitsWith(0), /*world=*/1), 0, &id).state, JobState::kEnded);
    EXPECT_TRUE(ids.insert(id).second) << id << " given out twice";
  }
}

TEST_P(SchedulerContract, SigkillEndsARunningJob) {
  const std::string id = Submit(Job(1, RunsUntilSignalled()));
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(WaitFor(id, JobState::kRunning).state, JobState::kRunning);
  ASSERT_TRUE(backend_->scheduler().Signal(id, SIGKILL).ok());
  const JobStatus st = WaitFor(id, JobState::kEnded);
  EXPECT_EQ(st.state, JobState::kEnded) << st.message;
  for (const RankEnd& e : st.ranks) {
    EXPECT_NE(e.exit_code, std::optional<int>(0)) << "rank " << e.rank << " ended cleanly";
  }
}

TEST_P(SchedulerContract, SignallingAnEndedJobIsOkAndChangesNothing) {
  std::string id;
  const JobStatus ended = RunToEnd(Job(1, ExitsWith(0), /*world=*/1), 0, &id);
  ASSERT_EQ(ended.state, JobState::kEnded) << ended.message;
  EXPECT_TRUE(backend_->scheduler().Signal(id, SIGUSR1).ok());
  EXPECT_TRUE(backend_->scheduler().Signal(id, SIGKILL).ok());
  absl::StatusOr<std::vector<JobStatus>> st = backend_->scheduler().Poll({id});
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->front().state, JobState::kEnded);
  EXPECT_EQ(st->front().ranks, ended.ranks);
}

TEST_P(SchedulerContract, ARestartedSchedulerPollsAndSignalsJobsStartedBefore) {
  const std::string id = Submit(Job(1, RunsUntilSignalled()));
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(WaitFor(id, JobState::kRunning).state, JobState::kRunning);
  Scheduler& restarted = backend_->Restarted();
  EXPECT_EQ(WaitFor(id, JobState::kRunning, &restarted).state, JobState::kRunning);
  ASSERT_TRUE(restarted.Signal(id, SIGKILL).ok());
  EXPECT_EQ(WaitFor(id, JobState::kEnded, &restarted).state, JobState::kEnded);
}

TEST_P(SchedulerContract, TheLogDirectoryIsPrivateAndHoldsTheJobsFiles) {
  if (!backend_->writes_log_directory()) GTEST_SKIP() << "this backend writes no files";
  JobSpec job = Job(1, ExitsWith(0), /*world=*/1);
  job.files = {{"campaign.toml", "[campaign]\nname = \"contract\"\n"}};
  const std::string id = Submit(job);
  ASSERT_FALSE(id.empty());
  struct stat st {};
  ASSERT_EQ(::stat(job.log_dir.c_str(), &st), 0) << job.log_dir;
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  std::ifstream in(job.log_dir / "campaign.toml");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "[campaign]\nname = \"contract\"\n");
  ASSERT_EQ(WaitFor(id, JobState::kEnded).state, JobState::kEnded);
  EXPECT_TRUE(fs::exists(job.log_dir / "rank_00000.log"));
}

}  // namespace
}  // namespace belay::sched
