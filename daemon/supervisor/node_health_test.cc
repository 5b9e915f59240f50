// Node reputation: failures lower it, time heals it, exclusions lapse.
#include "daemon/supervisor/node_health.h"

#include <gtest/gtest.h>

#include <cmath>

namespace belay::supervisor {
namespace {

using namespace std::chrono_literals;

const TimePoint kT0 = TimePoint(std::chrono::seconds(1'800'000'000));

pb::Node Fresh(const std::string& name) {
  pb::Node n;
  n.set_name(name);
  return n;
}

TEST(NodeHealth, AHealthyAttemptCountsButCostsNothing) {
  const NodeHealthPolicy policy;
  pb::Node n = AfterAttempt(Fresh("n1"), pb::END_REASON_UNSPECIFIED, kT0, policy);
  EXPECT_EQ(n.attempts_hosted(), 1);
  EXPECT_EQ(n.failures_attributed(), 0);
  EXPECT_DOUBLE_EQ(n.reputation(), 1.0);
  EXPECT_FALSE(ExcludedAt(n, kT0));
  // Reasons that say nothing about a node (a time limit, the user's cancel) cost nothing.
  n = AfterAttempt(n, pb::END_REASON_TIME_LIMIT, kT0, policy);
  EXPECT_EQ(n.failures_attributed(), 0);
  EXPECT_DOUBLE_EQ(n.reputation(), 1.0);
}

TEST(NodeHealth, ANodeFailureExcludesTheNodeUntilTheExclusionLapses) {
  const NodeHealthPolicy policy;  // base exclusion 1 h
  const pb::Node n = AfterAttempt(Fresh("n2"), pb::END_REASON_NODE_FAILURE, kT0, policy);
  EXPECT_EQ(n.failures_attributed(), 1);
  EXPECT_EQ(n.last_failure_reason(), pb::END_REASON_NODE_FAILURE);
  EXPECT_NEAR(n.reputation(), std::exp(-1.0), 1e-12);
  EXPECT_TRUE(n.excluded());
  EXPECT_EQ(n.excluded_until().seconds(), 1'800'000'000 + 3600);
  EXPECT_NE(n.exclusion_reason().find("node_failure"), std::string::npos) << n.exclusion_reason();
  EXPECT_TRUE(ExcludedAt(n, kT0 + 59min));
  EXPECT_FALSE(ExcludedAt(n, kT0 + 61min));
  EXPECT_EQ(ExcludedNodes({n, Fresh("n1")}, kT0 + 30min), std::vector<std::string>{"n2"});
  EXPECT_TRUE(ExcludedNodes({n}, kT0 + 2h).empty());
  const pb::Node later = Decayed(n, kT0 + 2h, policy);
  EXPECT_FALSE(later.excluded());
  EXPECT_FALSE(later.has_excluded_until());
  EXPECT_TRUE(later.exclusion_reason().empty());
}

TEST(NodeHealth, ReputationRecoversWithTheHalfLife) {
  const NodeHealthPolicy policy;  // half-life 24 h
  const pb::Node n = AfterAttempt(Fresh("n3"), pb::END_REASON_NODE_FAILURE, kT0, policy);
  EXPECT_NEAR(Decayed(n, kT0 + 24h, policy).reputation(), std::exp(-0.5), 1e-9);
  EXPECT_NEAR(Decayed(n, kT0 + 48h, policy).reputation(), std::exp(-0.25), 1e-9);
  // Decaying twice in steps is decaying once over the sum.
  EXPECT_NEAR(Decayed(Decayed(n, kT0 + 10h, policy), kT0 + 24h, policy).reputation(),
              std::exp(-0.5), 1e-9);
  EXPECT_EQ(Decayed(n, kT0 + 24h, policy).failures_attributed(), 1);  // history stays
}

TEST(NodeHealth, ANodeThatKeepsFailingStaysOutLonger) {
  const NodeHealthPolicy policy;
  pb::Node n = AfterAttempt(Fresh("n4"), pb::END_REASON_NODE_FAILURE, kT0, policy);
  n = AfterAttempt(n, pb::END_REASON_NODE_FAILURE, kT0 + 2h, policy);
  // Penalty 1 · 2^(-2/24) + 1 ≈ 1.94: one doubling of the base exclusion.
  EXPECT_EQ(n.excluded_until().seconds(), 1'800'000'000 + 7200 + 7200);
  n = AfterAttempt(n, pb::END_REASON_NODE_FAILURE, kT0 + 5h, policy);
  n = AfterAttempt(n, pb::END_REASON_NODE_FAILURE, kT0 + 10h, policy);
  n = AfterAttempt(n, pb::END_REASON_NODE_FAILURE, kT0 + 20h, policy);
  n = AfterAttempt(n, pb::END_REASON_NODE_FAILURE, kT0 + 45h, policy);
  // Never beyond max_exclusion (24 h).
  EXPECT_LE(n.excluded_until().seconds(), 1'800'000'000 + 45 * 3600 + 24 * 3600);
  EXPECT_EQ(n.failures_attributed(), 6);
}

TEST(NodeHealth, OneRankCrashIsForgivenTwoAtOnceAreNot) {
  const NodeHealthPolicy policy;
  pb::Node n = AfterAttempt(Fresh("n5"), pb::END_REASON_RANK_CRASH, kT0, policy);
  EXPECT_EQ(n.failures_attributed(), 1);
  EXPECT_FALSE(ExcludedAt(n, kT0));
  // A day later half of it is forgiven: another crash stays below the threshold.
  n = AfterAttempt(n, pb::END_REASON_RANK_CRASH, kT0 + 24h, policy);
  EXPECT_FALSE(ExcludedAt(n, kT0 + 24h));
  n = AfterAttempt(n, pb::END_REASON_RANK_CRASH, kT0 + 24h, policy);
  EXPECT_TRUE(ExcludedAt(n, kT0 + 24h));
}

// A node as the last read of Slurm's node states left its record.
pb::Node InSlurm(const std::string& name, bool available,
                 std::vector<std::string> partitions = {"debug"}, bool in_default = true) {
  pb::Node n = Fresh(name);
  n.set_reputation(1.0);
  n.set_slurm_state(available ? "IDLE" : "DOWN*");
  n.set_slurm_available(available);
  for (const std::string& p : partitions) n.add_slurm_partitions(p);
  n.set_slurm_default_partition(in_default);
  return n;
}

pb::Node Failed(pb::Node n, int failures, TimePoint at) {
  for (int i = 0; i < failures; ++i)
    n = AfterAttempt(n, pb::END_REASON_NODE_FAILURE, at, NodeHealthPolicy{});
  return n;
}

NodeRequest Request(int64_t nodes, int64_t min_nodes, std::string partition = "") {
  NodeRequest r;
  r.nodes = nodes;
  r.min_nodes = min_nodes;
  r.partition = std::move(partition);
  return r;
}

TEST(PlanNodes, AllNodesWhenEnoughAreUsableOrNoneIsKnown) {
  const NodeHealthPolicy policy;
  NodeRequest req = Request(2, 1);
  // Nothing known about the partition (no node states read yet): ask for all, as before.
  NodePlan p = PlanNodes({Fresh("a"), Failed(Fresh("b"), 1, kT0)}, kT0, req, policy);
  EXPECT_EQ(p.nodes, 2);
  EXPECT_EQ(p.usable, -1);
  EXPECT_EQ(p.exclude, std::vector<std::string>{"b"});
  // Three usable, one excluded: still two left.
  p = PlanNodes({InSlurm("a", true), InSlurm("b", true), Failed(InSlurm("c", true), 1, kT0)}, kT0,
                req, policy);
  EXPECT_EQ(p.nodes, 2);
  EXPECT_EQ(p.usable, 2);
  EXPECT_EQ(p.exclude, std::vector<std::string>{"c"});
  EXPECT_TRUE(p.readmitted.empty());
}

TEST(PlanNodes, ShrinksToTheLargestValidCountNotBelowMinNodes) {
  const NodeHealthPolicy policy;
  // Four nodes wanted, any count from 1 valid except 3.
  NodeRequest req = Request(4, 1);
  req.valid = [](int64_t n) { return n != 3; };
  std::vector<pb::Node> nodes = {InSlurm("a", true), InSlurm("b", true), InSlurm("c", true),
                                 InSlurm("d", false), Failed(InSlurm("e", true), 1, kT0)};
  NodePlan p = PlanNodes(nodes, kT0, req, policy);
  EXPECT_EQ(p.usable, 3);
  EXPECT_EQ(p.nodes, 2);  // 3 usable, but 3 nodes do not split the batch
  EXPECT_EQ(p.unavailable, std::vector<std::string>{"d"});
  EXPECT_EQ(p.exclude, std::vector<std::string>{"e"});
  req.valid = [](int64_t) { return true; };
  EXPECT_EQ(PlanNodes(nodes, kT0, req, policy).nodes, 3);
  // min_nodes = nodes: never shrinks; the job waits for the fourth node in Slurm's queue.
  req.min_nodes = 4;
  p = PlanNodes(nodes, kT0, req, policy);
  EXPECT_EQ(p.nodes, 4);
  // ... and the excluded node that Slurm would give is tried again rather than waiting.
  EXPECT_EQ(p.readmitted, std::vector<std::string>{"e"});
  EXPECT_TRUE(p.exclude.empty());
  // Once the exclusion lapsed the node is simply usable.
  p = PlanNodes(nodes, kT0 + 2h, req, policy);
  EXPECT_EQ(p.usable, 4);
  EXPECT_TRUE(p.readmitted.empty());
}

TEST(PlanNodes, ReadmitsTheLeastPenalisedExcludedNodesFirst) {
  const NodeHealthPolicy policy;
  NodeRequest req = Request(3, 2);
  std::vector<pb::Node> nodes = {InSlurm("a", true), Failed(InSlurm("bad", true), 3, kT0),
                                 Failed(InSlurm("once", true), 1, kT0),
                                 Failed(InSlurm("zz", true), 2, kT0)};
  NodePlan p = PlanNodes(nodes, kT0 + 10min, req, policy);
  EXPECT_EQ(p.nodes, 2);
  EXPECT_EQ(p.readmitted, std::vector<std::string>{"once"});
  EXPECT_EQ(p.exclude, (std::vector<std::string>{"bad", "zz"}));
  EXPECT_EQ(p.usable, 2);
  // With exclude_failed_nodes = false nothing is excluded, so nothing needs readmitting.
  req.exclude_failed = false;
  p = PlanNodes(nodes, kT0 + 10min, req, policy);
  EXPECT_EQ(p.nodes, 3);
  EXPECT_TRUE(p.exclude.empty());
  EXPECT_TRUE(p.readmitted.empty());
}

TEST(PlanNodes, CountsOnlyTheCampaignsPartition) {
  const NodeHealthPolicy policy;
  std::vector<pb::Node> nodes = {
      InSlurm("g1", true, {"gpu"}, false), InSlurm("g2", false, {"gpu"}, false),
      InSlurm("c1", true, {"cpu", "debug"}, true), InSlurm("c2", true, {"cpu"}, true)};
  NodeRequest req = Request(2, 1, "gpu");
  NodePlan p = PlanNodes(nodes, kT0, req, policy);
  EXPECT_EQ(p.usable, 1);
  EXPECT_EQ(p.nodes, 1);
  EXPECT_EQ(p.unavailable, std::vector<std::string>{"g2"});
  req.partition = "";  // the default partition: c1 and c2
  p = PlanNodes(nodes, kT0, req, policy);
  EXPECT_EQ(p.usable, 2);
  EXPECT_EQ(p.nodes, 2);
  req.partition = "debug";
  EXPECT_EQ(PlanNodes(nodes, kT0, req, policy).usable, 1);
  req.partition = "nosuch";  // no node known in it: no basis to shrink
  p = PlanNodes(nodes, kT0, req, policy);
  EXPECT_EQ(p.usable, -1);
  EXPECT_EQ(p.nodes, 2);
}

TEST(NodeHealth, ASlowRankCostsAQuarterAndFourInARowExclude) {
  const NodeHealthPolicy policy;
  pb::Node n = AfterSlowAttempt(Fresh("s1"), kT0, policy);
  EXPECT_EQ(n.slow_attempts(), 1);
  EXPECT_EQ(n.failures_attributed(), 0);
  EXPECT_NEAR(n.reputation(), std::exp(-kSlowRankWeight), 1e-12);
  EXPECT_FALSE(ExcludedAt(n, kT0));
  for (int i = 0; i < 3; ++i) n = AfterSlowAttempt(n, kT0, policy);
  EXPECT_EQ(n.slow_attempts(), 4);
  EXPECT_TRUE(ExcludedAt(n, kT0));
  EXPECT_NE(n.exclusion_reason().find("slow ranks (0 failures attributed, 4 with a slow rank"),
            std::string::npos)
      << n.exclusion_reason();
}

TEST(NodeHealth, SlowRanksAreThoseWellAboveTheMedian) {
  const NodeHealthPolicy policy;  // 1.5 x the median
  EXPECT_EQ(SlowRanks({0.10, 0.11, 0.25, 0.10}, policy), std::vector<int>{2});
  EXPECT_EQ(SlowRanks({0.10, 0.14, 0.12}, policy), std::vector<int>{});
  EXPECT_EQ(SlowRanks({0.10, 0.30}, policy), std::vector<int>{}) << "two ranks: no majority";
  EXPECT_EQ(SlowRanks({0.0, 0.0, 0.1}, policy), std::vector<int>{}) << "median 0";
  EXPECT_EQ(SlowRanks({0.2, 0.1, 0.1, 0.1, 0.9}, policy), (std::vector<int>{0, 4}));
}

}  // namespace
}  // namespace belay::supervisor
