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

}  // namespace
}  // namespace belay::supervisor
