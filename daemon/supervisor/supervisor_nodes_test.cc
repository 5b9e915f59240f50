// The Supervisor with its node planner on Slurm campaigns: failed and slow nodes, node
// states, attempts sized to the usable nodes, readmission and presubmitted jobs.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/supervisor/supervisor_fixture.h"

namespace belay::supervisor {
namespace {

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

TEST_F(SupervisorTest, LocalCampaignsKeepNoNodeRecords) {
  const std::string id = SubmitAndStart();
  Tick();
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "lost");
  Tick();
  EXPECT_TRUE(store::ListNodes(store_).value().empty());
}

}  // namespace
}  // namespace belay::supervisor
