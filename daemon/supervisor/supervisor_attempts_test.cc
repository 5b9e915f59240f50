// The Supervisor with its attempt monitor: hangs and their reports, the auto hang timeout, a
// restarted belayd's grace, step records of large worlds and the evidence of a failure.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/supervisor/supervisor_fixture.h"

namespace belay::supervisor {
namespace {

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

}  // namespace
}  // namespace belay::supervisor
