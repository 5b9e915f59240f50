// StateCollector over a Supervisor on the in-memory store with the fake scheduler: the
// samples of a running, a restarted and an ended campaign, and of nodes.
#include "daemon/metrics/state_collector.h"

#include <signal.h>

#include "daemon/metrics/metrics_testing.h"
#include "daemon/supervisor/supervisor_fixture.h"
#include "prometheus/text_serializer.h"

namespace belay::metrics {
namespace {

namespace pb = ::belay::v1;
using namespace std::chrono_literals;
using supervisor::EnvOf;
using supervisor::SupervisorTest;
using testing::Sample;
using testing::SampleCount;

class StateCollectorTest : public SupervisorTest {
 protected:
  std::vector<prometheus::MetricFamily> Scrape() {
    StateCollector collector(store_, clock_, sup_->node_health());
    return collector.Collect();
  }
  void Step(const std::string& id, int attempt, int64_t step, double loss, double tokens_per_s) {
    pb::StepMetrics m;
    m.set_step(step);
    m.set_loss(loss);
    m.set_tokens_per_s(tokens_per_s);
    ASSERT_TRUE(sup_->OnStep(id, attempt, m).ok());
  }
};

TEST_F(StateCollectorTest, ARunningCampaignShowsItsStateProgressLossesAndCheckpoint) {
  const std::string id = SubmitAndStart();
  Tick();
  for (int64_t s = 1; s <= 10; ++s) Step(id, 1, s, 3.0, 1000);
  Save(id, 1, 10);
  clock_.Advance(7s);
  Step(id, 1, 11, 2.75, 1234);
  pb::EvalMetrics eval;
  eval.set_step(11);
  eval.set_loss(3.5);
  ASSERT_TRUE(sup_->OnEval(id, 1, eval).ok());
  clock_.Advance(5s);

  const auto f = Scrape();
  const std::map<std::string, std::string> c = {{"campaign", id}, {"owner", "u"}};
  EXPECT_EQ(Sample(f, "belay_campaign_info",
                   {{"campaign", id},
                    {"owner_uid", "1000"},
                    {"name", Campaign(id).name()},
                    {"scheduler", "local"}}),
            1);
  EXPECT_EQ(Sample(f, "belay_campaign_state", {{"campaign", id}, {"state", "running"}}), 1);
  EXPECT_EQ(Sample(f, "belay_campaign_state", {{"campaign", id}, {"state", "submitted"}}), 0);
  EXPECT_EQ(SampleCount(f, "belay_campaign_state"), 6u);  // one per state
  EXPECT_EQ(Sample(f, "belay_campaign_step", c), 11);
  EXPECT_EQ(Sample(f, "belay_campaign_total_steps", c), 100);
  EXPECT_EQ(Sample(f, "belay_campaign_tokens", c), 11 * Campaign(id).tokens_per_step());
  EXPECT_EQ(Sample(f, "belay_campaign_train_loss", {{"campaign", id}, {"attempt", "1"}}), 2.75);
  EXPECT_EQ(Sample(f, "belay_campaign_tokens_per_second", c), 1234);
  EXPECT_EQ(Sample(f, "belay_campaign_last_step_age_seconds", c), 5);
  EXPECT_EQ(Sample(f, "belay_campaign_validation_loss",
                   {{"campaign", id}, {"attempt", "1"}, {"dataset", "val"}}),
            3.5);
  EXPECT_EQ(Sample(f, "belay_campaign_last_checkpoint_step", c), 10);
  EXPECT_EQ(Sample(f, "belay_campaign_last_checkpoint_age_seconds", c), 12);
  EXPECT_EQ(Sample(f, "belay_campaign_restarts_total", c), 0);
  EXPECT_EQ(Sample(f, "belay_campaign_max_restarts", c), 3);
  EXPECT_EQ(SampleCount(f, "belay_campaign_goodput_rank_hours"), 6u);
  // 12 s of 2 ranks allocated so far.
  EXPECT_NEAR(*Sample(f, "belay_campaign_goodput_rank_hours", {{"bucket", "spent"}}),
              2 * 12.0 / 3600, 1e-9);
}

TEST_F(StateCollectorTest, AKilledRankCountsARestartAndTheCampaignRecovers) {
  const std::string id = SubmitAndStart();
  Tick();
  Step(id, 1, 1, 3.0, 1000);
  Save(id, 1, 1);
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  const auto f = Scrape();
  EXPECT_EQ(Sample(f, "belay_campaign_restarts_total", {{"campaign", id}}), 1);
  EXPECT_EQ(Sample(f, "belay_campaign_state", {{"campaign", id}, {"state", "recovering"}}), 1);
  EXPECT_EQ(Sample(f, "belay_campaign_state", {{"campaign", id}, {"state", "running"}}), 0);
}

TEST_F(StateCollectorTest, ALossIsTheCurrentAttemptsWhileItReplaysStepsItsPredecessorRan) {
  const std::string id = SubmitAndStart();
  Tick();
  for (int64_t s = 1; s <= 20; ++s) Step(id, 1, s, 3.0, 1000);
  Save(id, 1, 20);
  Step(id, 1, 21, 3.0, 1000);
  Step(id, 1, 22, 3.0, 1000);
  Step(id, 1, 23, 3.0, 1000);
  sched_.End(JobOf(id, 1), Crash(1, SIGKILL));
  Tick();
  clock_.Advance(31s);
  Tick();  // attempt 2 starts from step 20
  Tick();
  ASSERT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_RUNNING);
  Step(id, 2, 21, 1.5, 500);
  clock_.Advance(3s);
  const auto f = Scrape();
  EXPECT_EQ(SampleCount(f, "belay_campaign_train_loss"), 1u);
  EXPECT_EQ(Sample(f, "belay_campaign_train_loss", {{"campaign", id}, {"attempt", "2"}}), 1.5);
  EXPECT_EQ(Sample(f, "belay_campaign_tokens_per_second", {{"attempt", "2"}}), 500);
  EXPECT_EQ(Sample(f, "belay_campaign_last_step_age_seconds", {{"attempt", "2"}}), 3);
}

TEST_F(StateCollectorTest, AnEndedCampaignLeavesAfterTheWindow) {
  const std::string id = SubmitAndStart();
  Tick();
  Steps(id, 1, 1, 100);
  Finish(id, 1, pb::EXIT_KIND_COMPLETED);
  sched_.End(JobOf(id, 1));
  Tick();
  ASSERT_EQ(Campaign(id).state(), pb::CAMPAIGN_STATE_COMPLETED);
  EXPECT_EQ(Sample(Scrape(), "belay_campaign_state", {{"campaign", id}, {"state", "completed"}}),
            1);
  clock_.Advance(23h);
  EXPECT_EQ(SampleCount(Scrape(), "belay_campaign_info"), 1u);
  clock_.Advance(1h + 1s);
  const auto f = Scrape();
  EXPECT_EQ(SampleCount(f, "belay_campaign_info"), 0u);
  EXPECT_EQ(SampleCount(f, "belay_campaign_step"), 0u);
}

TEST_F(StateCollectorTest, NodesShowReputationExclusionAndFailures) {
  spec_.resources.scheduler = SchedulerKind::kSlurm;
  const std::string id = SubmitAndStart();
  sched_.SetNodes(JobOf(id, 1), {"n1", "n2"});
  Tick();
  Steps(id, 1, 1, 10);
  sched_.SetNodes(JobOf(id, 1), {"n2"});
  sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_NODE_FAILURE, "NODE_FAIL");
  Tick();
  const auto f = Scrape();
  EXPECT_EQ(Sample(f, "belay_node_excluded", {{"node", "n1"}}), 0);
  EXPECT_EQ(Sample(f, "belay_node_excluded", {{"node", "n2"}}), 1);
  EXPECT_EQ(Sample(f, "belay_node_failures_attributed_total", {{"node", "n1"}}), 0);
  EXPECT_EQ(Sample(f, "belay_node_failures_attributed_total", {{"node", "n2"}}), 1);
  EXPECT_EQ(Sample(f, "belay_node_reputation", {{"node", "n1"}}), 1);
  EXPECT_LT(*Sample(f, "belay_node_reputation", {{"node", "n2"}}), 0.5);
}

TEST_F(StateCollectorTest, TheExpositionHoldsNoTokenNorStatePath) {
  const std::string id = SubmitAndStart();
  Tick();
  Step(id, 1, 1, 3.0, 1000);
  const std::string token = EnvOf(sched_.submitted()[0], "BELAY_TOKEN");
  ASSERT_FALSE(token.empty());
  const std::string text = prometheus::TextSerializer().Serialize(Scrape());
  EXPECT_NE(text.find("belay_campaign_train_loss{"), std::string::npos) << text;
  EXPECT_EQ(text.find(token), std::string::npos);
  EXPECT_EQ(text.find(Attempt(id, 1).worker_token_nonce()), std::string::npos);
  EXPECT_EQ(text.find(dir_.string()), std::string::npos);  // no path of belayd's or the owner's
  EXPECT_EQ(text.find("/home/u"), std::string::npos);
}

}  // namespace
}  // namespace belay::metrics
