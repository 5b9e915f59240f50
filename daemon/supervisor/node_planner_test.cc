// The node planner over an in-memory store, the fake scheduler and a fake clock: node states
// copied at their rate, attempts sized to the usable nodes, reputation after failures and
// slow ranks, and presubmitted jobs.
#include "daemon/supervisor/node_planner.h"

#include "common/strings.h"
#include "daemon/scheduler/fake_scheduler.h"
#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

using namespace std::chrono_literals;

class NodePlannerTest : public ::testing::Test {
 protected:
  NodePlannerTest() {
    c_.set_id("c-1");
    c_.set_scheduler(pb::SCHEDULER_KIND_SLURM);
    a_.set_campaign_id("c-1");
    a_.set_number(1);
    a_.set_state(pb::ATTEMPT_STATE_RUNNING);
    a_.set_scheduler_job_id("job-1");
    spec_.resources.scheduler = SchedulerKind::kSlurm;
    spec_.resources.nodes = 3;
    spec_.resources.min_nodes = 2;
    spec_.resources.ranks_per_node = 1;
    spec_.train.global_batch = 6;
    spec_.train.micro_batch = 1;
    sched_.SetNodeStates({Node("n0"), Node("n1"), Node("n2")});
  }
  // A node of the default partition "batch", down or idle.
  static sched::NodeState Node(std::string name, bool down = false) {
    return {.name = std::move(name),
            .state = down ? "DOWN" : "IDLE",
            .reason = "",
            .down = down,
            .drain = false,
            .partitions = {"batch"},
            .in_default_partition = true};
  }
  pb::Node Record(const std::string& name) { return store::GetNode(store_, name).value().value(); }
  std::vector<std::string> Events() {
    std::vector<std::string> out;
    const std::vector<pb::Event> events = store::ListEvents(store_, "c-1").value();
    for (const pb::Event& e : events) out.push_back(e.message());
    return out;
  }
  bool HasEvent(const std::string& text) {
    for (const std::string& m : Events()) {
      if (m.find(text) != std::string::npos) return true;
    }
    return false;
  }
  void Write(store::WriteBatch& b) {
    ASSERT_TRUE(store_.Write(b, store::Durability::kSynced).ok());
  }

  store::MemoryStore store_;
  sched::FakeScheduler sched_;
  FakeClock clock_;
  store::EventLog events_{store_, clock_};
  NodePlanner planner_{store_, sched_, events_, clock_, NodeHealthPolicy{}, 60s};
  pb::Campaign c_;
  pb::Attempt a_;
  CampaignSpec spec_;
};

TEST_F(NodePlannerTest, NodeStatesAreCopiedOncePerInterval) {
  ASSERT_TRUE(planner_.RefreshStatesIfDue().ok());
  EXPECT_TRUE(Record("n1").slurm_available());
  EXPECT_EQ(Record("n1").reputation(), 1.0);
  sched_.SetNodeStates({Node("n0"), Node("n1", /*down=*/true), Node("n2")});
  ASSERT_TRUE(planner_.RefreshStatesIfDue().ok());
  EXPECT_TRUE(Record("n1").slurm_available());  // not yet
  clock_.Advance(60s);
  ASSERT_TRUE(planner_.RefreshStatesIfDue().ok());
  EXPECT_FALSE(Record("n1").slurm_available());
  EXPECT_EQ(Record("n1").slurm_state(), "DOWN");
}

TEST_F(NodePlannerTest, AnAttemptRunsOnTheUsableNodesAndSaysWhy) {
  sched_.SetNodeStates({Node("n0"), Node("n1", /*down=*/true), Node("n2")});
  ASSERT_TRUE(planner_.RefreshStatesIfDue().ok());
  store::WriteBatch b;
  ASSERT_TRUE(planner_.PlanAttempt(b, c_, a_, spec_).ok());
  Write(b);
  EXPECT_EQ(a_.world_size(), 2);
  EXPECT_TRUE(HasEvent("attempt 1 runs on 2 of 3 nodes (2 ranks instead of 3)"));
  EXPECT_TRUE(HasEvent("Slurm has n1 down or drained"));
}

TEST_F(NodePlannerTest, AFailedNodeIsExcludedAndThenPlannedAround) {
  ASSERT_TRUE(planner_.RefreshStatesIfDue().ok());
  a_.add_nodes("n0");
  a_.add_nodes("n1");
  Classification cls;
  cls.reason = pb::END_REASON_NODE_FAILURE;
  cls.failed_nodes = {"n1"};
  store::WriteBatch b;
  ASSERT_TRUE(planner_.RecordHealth(b, c_, a_, cls, {}).ok());
  Write(b);
  EXPECT_TRUE(Record("n1").excluded());
  EXPECT_FALSE(Record("n0").excluded());
  EXPECT_TRUE(HasEvent("node n1 excluded from new submissions after node_failure in attempt 1"));
  pb::Attempt next;
  next.set_number(2);
  store::WriteBatch plan;
  ASSERT_TRUE(planner_.PlanAttempt(plan, c_, next, spec_).ok());
  EXPECT_EQ(next.world_size(), 2);
  ASSERT_EQ(next.excluded_nodes_size(), 1);
  EXPECT_EQ(next.excluded_nodes(0), "n1");
}

TEST_F(NodePlannerTest, APersistentlySlowRankLowersItsNodesReputation) {
  for (int r = 0; r < 3; ++r) {
    pb::RankRecord rank;
    rank.set_campaign_id("c-1");
    rank.set_attempt_number(1);
    rank.set_rank(r);
    rank.set_node(Cat("n", r));
    store::WriteBatch w;
    store::Put(w, rank);
    Write(w);
  }
  store::WriteBatch b;
  ASSERT_TRUE(planner_.RecordHealth(b, c_, a_, {}, {0.1, 0.1, 0.5}).ok());
  Write(b);
  EXPECT_LT(Record("n2").reputation(), 1.0);
  EXPECT_FALSE(store::GetNode(store_, "n0").value().has_value());  // not in the attempt
  EXPECT_TRUE(HasEvent("node n2: rank 2 (0.5 s) computed persistently slower"));
}

TEST_F(NodePlannerTest, LocalCampaignsKeepNoNodeRecords) {
  c_.set_scheduler(pb::SCHEDULER_KIND_LOCAL);
  Classification cls;
  cls.reason = pb::END_REASON_NODE_FAILURE;
  cls.failed_nodes = {"here"};
  store::WriteBatch b;
  ASSERT_TRUE(planner_.RecordHealth(b, c_, a_, cls, {}).ok());
  EXPECT_TRUE(b.empty());
}

TEST_F(NodePlannerTest, APresubmittedJobQueuesBehindTheRunningOneWithItsOwnToken) {
  spec_.resources.presubmit = true;
  EXPECT_TRUE(WantsPresubmit(c_, a_, spec_));
  ASSERT_TRUE(planner_.PrepareSuccessor(a_).ok());
  const std::string nonce = a_.successor_token_nonce();
  EXPECT_FALSE(nonce.empty());
  EXPECT_EQ(store::GetAttempt(store_, "c-1", 1).value()->successor_token_nonce(), nonce);
  ASSERT_TRUE(planner_.PrepareSuccessor(a_).ok());
  EXPECT_EQ(a_.successor_token_nonce(), nonce);  // the same job if asked again
  sched::JobSpec job;
  job.campaign_id = "c-1";
  job.attempt = 2;
  job.env = {{"BELAY_TOKEN", nonce}};
  absl::StatusOr<std::optional<std::string>> id = planner_.Presubmit(c_, a_, job);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(id->has_value());
  EXPECT_EQ(a_.successor_job_id(), **id);
  EXPECT_EQ(sched_.submitted().back().after_job, "job-1");
  EXPECT_EQ(store::GetAttempt(store_, "c-1", 1).value()->successor_job_id(), **id);
  EXPECT_FALSE(WantsPresubmit(c_, a_, spec_));  // one is queued
}

TEST_F(NodePlannerTest, ARefusedPresubmissionIsNotTriedAgain) {
  spec_.resources.presubmit = true;
  sched_.FailNextSubmit(absl::InvalidArgumentError("no dependencies here"));
  absl::StatusOr<std::optional<std::string>> id = planner_.Presubmit(c_, a_, sched::JobSpec{});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_FALSE(id->has_value());
  EXPECT_TRUE(a_.successor_refused());
  EXPECT_FALSE(WantsPresubmit(c_, a_, spec_));
  EXPECT_TRUE(HasEvent("attempt 2 could not be presubmitted: no dependencies here"));
}

}  // namespace
}  // namespace belay::supervisor
