// The pure policy: transition tables, end-reason classification, restart decisions.
#include "daemon/supervisor/policy.h"

#include <signal.h>

#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

TEST(Transitions, FollowTheLifecycleAndTerminalStatesHaveNoWayOut) {
  EXPECT_TRUE(CampaignTransitionAllowed(pb::CAMPAIGN_STATE_SUBMITTED, pb::CAMPAIGN_STATE_RUNNING));
  EXPECT_TRUE(CampaignTransitionAllowed(pb::CAMPAIGN_STATE_RUNNING, pb::CAMPAIGN_STATE_RECOVERING));
  EXPECT_TRUE(CampaignTransitionAllowed(pb::CAMPAIGN_STATE_RECOVERING, pb::CAMPAIGN_STATE_RUNNING));
  EXPECT_FALSE(
      CampaignTransitionAllowed(pb::CAMPAIGN_STATE_SUBMITTED, pb::CAMPAIGN_STATE_RECOVERING));
  for (auto terminal :
       {pb::CAMPAIGN_STATE_COMPLETED, pb::CAMPAIGN_STATE_FAILED, pb::CAMPAIGN_STATE_CANCELLED}) {
    EXPECT_TRUE(IsTerminal(terminal));
    for (int to = 0; to <= 6; ++to) {
      EXPECT_FALSE(CampaignTransitionAllowed(terminal, static_cast<pb::CampaignState>(to)));
    }
  }
  EXPECT_TRUE(AttemptTransitionAllowed(pb::ATTEMPT_STATE_QUEUED, pb::ATTEMPT_STATE_STARTING));
  EXPECT_TRUE(AttemptTransitionAllowed(pb::ATTEMPT_STATE_STARTING, pb::ATTEMPT_STATE_ENDED));
  EXPECT_FALSE(AttemptTransitionAllowed(pb::ATTEMPT_STATE_ENDED, pb::ATTEMPT_STATE_RUNNING));
  EXPECT_FALSE(AttemptTransitionAllowed(pb::ATTEMPT_STATE_RUNNING, pb::ATTEMPT_STATE_QUEUED));
}

EndEvidence Exited(std::vector<sched::RankEnd> ranks) {
  EndEvidence ev;
  ev.job.state = sched::JobState::kEnded;
  ev.job.ranks = std::move(ranks);
  ev.world_size = static_cast<int>(ev.job.ranks.size());
  return ev;
}

pb::RankExit Finish(int rank, pb::ExitKind kind,
                    pb::EndReason reason = pb::END_REASON_UNSPECIFIED) {
  pb::RankExit e;
  e.set_rank(rank);
  e.set_exit_kind(kind);
  e.set_error_reason(reason);
  e.set_message("missing /data/train_000.bin");
  return e;
}

TEST(Classify, NamesTheRankThatCrashed) {
  Classification c = Classify(Exited({{0, 0, 0, "n0"}, {1, std::nullopt, SIGKILL, "n1"}}));
  EXPECT_EQ(c.reason, pb::END_REASON_RANK_CRASH);
  EXPECT_EQ(c.message, "rank 1 killed by signal 9 on n1");
  c = Classify(Exited({{0, 3, 0, "n0"}}));
  EXPECT_EQ(c.message, "rank 0 exited with status 3 on n0");
}

TEST(Classify, FollowsItsOrderOfEvidence) {
  EndEvidence ev = Exited({{0, 0, 0, "n0"}, {1, 0, 0, "n0"}});
  ev.finishes = {Finish(0, pb::EXIT_KIND_COMPLETED), Finish(1, pb::EXIT_KIND_COMPLETED)};
  EXPECT_EQ(Classify(ev).reason, pb::END_REASON_COMPLETED);
  ev.finishes[1] = Finish(1, pb::EXIT_KIND_TIME_LIMIT_CHECKPOINTED);
  EXPECT_EQ(Classify(ev).reason, pb::END_REASON_TIME_LIMIT);
  ev.finishes[1] = Finish(1, pb::EXIT_KIND_ERROR, pb::END_REASON_MISSING_DATA);
  EXPECT_EQ(Classify(ev).reason, pb::END_REASON_MISSING_DATA);
  EXPECT_EQ(Classify(ev).message, "rank 1: missing /data/train_000.bin");
  ev.reported = pb::END_REASON_NAN;
  EXPECT_EQ(Classify(ev).reason, pb::END_REASON_NAN);
  ev.job.reason = pb::END_REASON_NODE_FAILURE;
  ev.job.nodes = {"nid001234"};
  EXPECT_EQ(Classify(ev).reason, pb::END_REASON_NODE_FAILURE);
  EXPECT_EQ(Classify(ev).failed_nodes, std::vector<std::string>{"nid001234"});
  ev.cancel_requested = true;
  EXPECT_EQ(Classify(ev).reason, pb::END_REASON_CANCELLED_BY_USER);
  ev.killed_for_hang = true;
  EXPECT_EQ(Classify(ev).reason, pb::END_REASON_HANG);
  // Ranks that exit 0 without a word: not a completion.
  EXPECT_EQ(Classify(Exited({{0, 0, 0, "n0"}})).reason, pb::END_REASON_RANK_CRASH);
}

pb::Attempt Ended(int n, pb::EndReason r, std::optional<int64_t> start = std::nullopt) {
  pb::Attempt a;
  a.set_number(n);
  a.set_end_reason(r);
  if (start) a.set_start_checkpoint_step(*start);
  return a;
}

TEST(Decide, FollowsTheEndReasonTable) {
  RestartSpec r;
  pb::Campaign c;
  auto next = [&](pb::EndReason reason) {
    return Decide(reason, c, {Ended(1, reason)}, r, 0).next;
  };
  EXPECT_EQ(next(pb::END_REASON_COMPLETED), NextStep::kComplete);
  EXPECT_EQ(next(pb::END_REASON_CANCELLED_BY_USER), NextStep::kCancel);
  EXPECT_EQ(next(pb::END_REASON_BAD_SPEC), NextStep::kFail);
  EXPECT_EQ(next(pb::END_REASON_MISSING_DATA), NextStep::kFail);
  for (auto reason : {pb::END_REASON_TIME_LIMIT, pb::END_REASON_PREEMPTED,
                      pb::END_REASON_CANCELLED_EXTERNALLY, pb::END_REASON_DAEMON_LOST}) {
    Decision d = Decide(reason, c, {Ended(1, reason)}, r, 0);
    EXPECT_EQ(d.next, NextStep::kRestart) << pb::EndReason_Name(reason);
    EXPECT_EQ(d.delay.count(), 0);
    EXPECT_FALSE(d.counts_as_restart);
  }
  Decision node =
      Decide(pb::END_REASON_NODE_FAILURE, c, {Ended(1, pb::END_REASON_NODE_FAILURE)}, r, 0);
  EXPECT_TRUE(node.counts_as_node_failure);
  EXPECT_FALSE(node.counts_as_restart);
  Decision nan = Decide(pb::END_REASON_NAN, c, {Ended(1, pb::END_REASON_NAN)}, r, 0);
  EXPECT_EQ(nan.next, NextStep::kRestart);
  EXPECT_TRUE(nan.counts_as_rollback);
  r.nan_policy = NanPolicy::kStop;
  EXPECT_EQ(Decide(pb::END_REASON_NAN, c, {Ended(1, pb::END_REASON_NAN)}, r, 0).next,
            NextStep::kFail);
}

TEST(Decide, BacksOffExponentiallyWithJitterUpToTheMaximum) {
  RestartSpec r;
  r.backoff.initial = std::chrono::seconds(30);
  r.backoff.max = std::chrono::seconds(600);
  r.backoff.jitter = 0.2;
  pb::Campaign c;
  c.set_last_checkpoint_step(100);  // progress every time: no crash loop
  std::vector<pb::Attempt> history;
  std::vector<int64_t> delays;
  for (int n = 1; n <= 7; ++n) {
    history.push_back(Ended(n, pb::END_REASON_RANK_CRASH, 100 - n));
    delays.push_back(Decide(pb::END_REASON_RANK_CRASH, c, history, r, 0).delay.count());
  }
  EXPECT_EQ(delays, (std::vector<int64_t>{30, 60, 120, 240, 480, 600, 600}));
  EXPECT_EQ(Decide(pb::END_REASON_RANK_CRASH, c, {Ended(1, pb::END_REASON_RANK_CRASH, 0)}, r, 1.0)
                .delay.count(),
            36);
  EXPECT_EQ(Decide(pb::END_REASON_RANK_CRASH, c, {Ended(1, pb::END_REASON_RANK_CRASH, 0)}, r, -1.0)
                .delay.count(),
            24);
}

TEST(Decide, TheSameFailureWithoutCheckpointProgressIsACrashLoop) {
  RestartSpec r;
  pb::Campaign c;
  c.set_last_checkpoint_step(50);
  std::vector<pb::Attempt> h = {Ended(1, pb::END_REASON_RANK_CRASH),
                                Ended(2, pb::END_REASON_RANK_CRASH, 50)};
  Decision d = Decide(pb::END_REASON_RANK_CRASH, c, h, r, 0);
  EXPECT_EQ(d.next, NextStep::kFail);
  EXPECT_EQ(d.fail_reason, pb::END_REASON_CRASH_LOOP);
  // With a newer checkpoint since attempt 2 started, it is not.
  c.set_last_checkpoint_step(60);
  EXPECT_EQ(Decide(pb::END_REASON_RANK_CRASH, c, h, r, 0).next, NextStep::kRestart);
  // A different failure before it is not either.
  c.set_last_checkpoint_step(50);
  h[0].set_end_reason(pb::END_REASON_HANG);
  EXPECT_EQ(Decide(pb::END_REASON_RANK_CRASH, c, h, r, 0).next, NextStep::kRestart);
}

TEST(Decide, BudgetsEndTheCampaign) {
  RestartSpec r;
  r.max_restarts = 2;
  r.max_rollbacks = 1;
  r.max_node_failures = 1;
  pb::Campaign c;
  c.set_restarts_used(2);
  c.set_rollbacks_used(1);
  c.set_node_failures(1);
  EXPECT_EQ(
      Decide(pb::END_REASON_RANK_CRASH, c, {Ended(1, pb::END_REASON_RANK_CRASH)}, r, 0).fail_reason,
      pb::END_REASON_RESTARTS_EXHAUSTED);
  EXPECT_EQ(Decide(pb::END_REASON_NAN, c, {Ended(1, pb::END_REASON_NAN)}, r, 0).fail_reason,
            pb::END_REASON_ROLLBACKS_EXHAUSTED);
  EXPECT_EQ(
      Decide(pb::END_REASON_NODE_FAILURE, c, {Ended(1, pb::END_REASON_NODE_FAILURE)}, r, 0).next,
      NextStep::kFail);
}

TEST(AutoHangTimeout, StartupUntilThePaceIsKnownThenTheLargestTerm) {
  const HangAllowance allow{std::chrono::seconds(600), std::chrono::seconds(180)};
  EXPECT_EQ(AutoHangTimeout({5, 1.0, 2.0, false}, allow).count(), 600);
  EXPECT_EQ(AutoHangTimeout({50, 1.0, 2.0, false}, allow).count(), 180);     // floor
  EXPECT_EQ(AutoHangTimeout({50, 30.0, 2.0, false}, allow).count(), 600);    // 20 x 30 s steps
  EXPECT_EQ(AutoHangTimeout({50, 1.0, 100.25, false}, allow).count(), 301);  // 3 x a 100 s save
  EXPECT_EQ(AutoHangTimeout({50, 1.0, 2.0, true}, allow).count(), 600);      // saving now
}

}  // namespace
}  // namespace belay::supervisor
