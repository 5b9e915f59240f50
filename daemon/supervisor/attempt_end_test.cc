// PlanAttemptEnd as a pure function: from a campaign, its attempt and how the job ended, the
// records, events and actions that follow.
#include "daemon/supervisor/attempt_end.h"

#include "daemon/store/event_log.h"
#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

using namespace std::chrono_literals;

class AttemptEndTest : public ::testing::Test {
 protected:
  AttemptEndTest() {
    c_.set_id("c-1");
    c_.set_state(pb::CAMPAIGN_STATE_RUNNING);
    c_.set_total_steps(100);
    c_.set_current_step(25);
    c_.set_current_attempt(1);
    c_.set_last_checkpoint_step(20);
    a_.set_campaign_id("c-1");
    a_.set_number(1);
    a_.set_state(pb::ATTEMPT_STATE_RUNNING);
    a_.set_world_size(2);
    a_.set_ranks_per_node(2);
    restart_.max_restarts = 3;
    restart_.backoff = {30s, 600s, 0.0};
    facts_.now = TimePoint(1'800'000'000s);
    facts_.job.state = sched::JobState::kEnded;
  }
  absl::StatusOr<AttemptEndPlan> Plan() {
    facts_.history = {a_};
    return PlanAttemptEnd(c_, a_, restart_, facts_);
  }
  static bool Mentions(const std::vector<PlannedEvent>& events, const std::string& text) {
    for (const PlannedEvent& e : events) {
      if (e.message.find(text) != std::string::npos) return true;
    }
    return false;
  }

  pb::Campaign c_;
  pb::Attempt a_;
  RestartSpec restart_;
  AttemptEndFacts facts_;
};

TEST_F(AttemptEndTest, ACrashQueuesTheNextAttemptAfterBackoffFromTheLastCheckpoint) {
  facts_.job.ranks = {{0, 0, 0, "n0"}, {1, std::nullopt, 9, "n0"}};
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ended.state(), pb::ATTEMPT_STATE_ENDED);
  EXPECT_EQ(p->ended.end_reason(), pb::END_REASON_RANK_CRASH);
  EXPECT_TRUE(p->ended.counted_as_restart());
  EXPECT_EQ(p->campaign.restarts_used(), 1);
  EXPECT_EQ(p->campaign.state(), pb::CAMPAIGN_STATE_RECOVERING);
  EXPECT_EQ(p->campaign.current_attempt(), 2);
  ASSERT_TRUE(p->next.has_value());
  EXPECT_EQ(p->next->number(), 2);
  EXPECT_EQ(p->next->start_checkpoint_step(), 20);
  EXPECT_EQ(store::FromTimestamp(p->next->queue_time()), facts_.now + 30s);
  EXPECT_FALSE(p->rollback_to.has_value());
  EXPECT_TRUE(p->incident);
  EXPECT_TRUE(p->cancel_job.empty());
  ASSERT_TRUE(p->queued.has_value());
  EXPECT_EQ(p->queued->message, "attempt 2 queued to resume from step 20, starts in 30 s");
  EXPECT_TRUE(Mentions(p->events, "running -> recovering: rank_crash"));
  // The inputs are not touched: it is a plan.
  EXPECT_EQ(a_.state(), pb::ATTEMPT_STATE_RUNNING);
  EXPECT_EQ(c_.restarts_used(), 0);
}

TEST_F(AttemptEndTest, ANonFiniteLossRollsBackToTheLastGoodCheckpoint) {
  c_.set_last_good_checkpoint_step(10);
  a_.set_end_reason(pb::END_REASON_NAN);
  a_.set_end_message("loss nan at step 25");
  facts_.job.ranks = {{0, std::nullopt, 9, "n0"}, {1, std::nullopt, 9, "n0"}};
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ended.end_reason(), pb::END_REASON_NAN);
  EXPECT_EQ(p->campaign.rollbacks_used(), 1);
  ASSERT_TRUE(p->rollback_to.has_value());
  EXPECT_EQ(*p->rollback_to, 10);
  EXPECT_EQ(p->next->start_checkpoint_step(), 10);
}

TEST_F(AttemptEndTest, ARollbackWithoutAGoodCheckpointStartsOver) {
  a_.set_end_reason(pb::END_REASON_NAN);
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->rollback_to, -1);
  EXPECT_FALSE(p->next->has_start_checkpoint_step());
  EXPECT_EQ(p->queued->message, "attempt 2 queued to start from step 0");
}

TEST_F(AttemptEndTest, RanksThatReachedTheLastStepCompleteTheCampaign) {
  c_.set_current_step(100);
  facts_.job.ranks = {{0, 0, 0, "n0"}, {1, 0, 0, "n0"}};
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ended.end_reason(), pb::END_REASON_COMPLETED);
  EXPECT_EQ(p->campaign.state(), pb::CAMPAIGN_STATE_COMPLETED);
  EXPECT_EQ(p->campaign.end_reason(), pb::END_REASON_COMPLETED);
  EXPECT_TRUE(p->campaign.has_end_time());
  EXPECT_FALSE(p->next.has_value());
  EXPECT_FALSE(p->incident);
}

TEST_F(AttemptEndTest, ATimeLimitTakesOverThePresubmittedJob) {
  a_.set_successor_job_id("job-2");
  a_.set_successor_token_nonce("nonce-2");
  a_.add_excluded_nodes("bad");
  facts_.job.reason = pb::END_REASON_TIME_LIMIT;
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->cancel_job.empty());
  ASSERT_TRUE(p->next.has_value());
  EXPECT_TRUE(p->next->presubmitted());
  EXPECT_EQ(p->next->scheduler_job_id(), "job-2");
  EXPECT_EQ(p->next->worker_token_nonce(), "nonce-2");
  EXPECT_EQ(p->next->excluded_nodes(0), "bad");
  EXPECT_EQ(store::FromTimestamp(p->next->queue_time()), facts_.now);
}

TEST_F(AttemptEndTest, APresubmittedJobGoesWhenTheNextAttemptWaitsForBackoff) {
  a_.set_successor_job_id("job-2");
  facts_.job.ranks = {{0, std::nullopt, 9, "n0"}, {1, 0, 0, "n0"}};
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->cancel_job, "job-2");
  EXPECT_FALSE(p->next->presubmitted());
  EXPECT_TRUE(p->next->scheduler_job_id().empty());
  EXPECT_EQ(p->events.front().message,
            "presubmitted job job-2 cancelled: attempt 1 ended rank_crash");
}

TEST_F(AttemptEndTest, AFirstAttemptThatNeverRanGoesThroughRunningToRecovering) {
  c_.set_state(pb::CAMPAIGN_STATE_SUBMITTED);
  facts_.job.reason = pb::END_REASON_SCHEDULER_REJECTED;
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(Mentions(p->events, "submitted -> running"));
  EXPECT_TRUE(Mentions(p->events, "running -> recovering: scheduler_rejected"));
  EXPECT_EQ(p->campaign.state(), pb::CAMPAIGN_STATE_RECOVERING);
}

TEST_F(AttemptEndTest, ACancelEndsTheCampaignCancelled) {
  c_.set_cancel_requested(true);
  absl::StatusOr<AttemptEndPlan> p = Plan();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->campaign.state(), pb::CAMPAIGN_STATE_CANCELLED);
  EXPECT_EQ(p->campaign.end_reason(), pb::END_REASON_CANCELLED_BY_USER);
  EXPECT_FALSE(p->next.has_value());
}

TEST_F(AttemptEndTest, AStateTheTransitionTableRefusesIsAnInternalError) {
  c_.set_state(pb::CAMPAIGN_STATE_COMPLETED);
  facts_.job.ranks = {{0, std::nullopt, 9, "n0"}, {1, 0, 0, "n0"}};
  EXPECT_EQ(Plan().status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace belay::supervisor
