// The attempt monitor over an in-memory store and a fake clock: hang timeouts from the pace,
// hang reports, slow-rank sums and evidence written at their rate, and what a restarted
// belayd rebuilds.
#include "daemon/supervisor/attempt_monitor.h"

#include "common/strings.h"
#include "daemon/store/event_log.h"
#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

using namespace std::chrono_literals;

class AttemptMonitorTest : public ::testing::Test {
 protected:
  AttemptMonitorTest() {
    options_.default_hang_timeout = 600s;
    options_.auto_hang_floor = 10s;
    options_.evidence_steps = 2;
    attempt_.set_campaign_id("c-1");
    attempt_.set_number(1);
    attempt_.set_world_size(3);
    monitor_ = std::make_unique<AttemptMonitor>(store_, clock_, options_);
  }
  // Step `step` of 2 s with the ranks' compute times, reported now and written as the
  // supervisor writes it; then a second passes.
  void Step(int64_t step, std::vector<double> compute = {}) {
    pb::StepMetrics m;
    m.set_step(step);
    m.set_step_time_s(2.0);
    m.set_attempt_number(attempt_.number());
    store::SetTime(m.mutable_time(), clock_.Now());
    for (double t : compute) m.add_rank_compute_time_s(t);
    if (attempt_.first_step() == 0) attempt_.set_first_step(step);
    attempt_.set_last_step(step);
    store::WriteBatch b;
    store::Put(b, "c-1", m);
    monitor_->OnStep(b, "c-1", attempt_, m);
    ASSERT_TRUE(store_.Write(b, store::Durability::kSynced).ok());
    monitor_->KeepEvidence("c-1", attempt_.number(), m);
    clock_.Advance(1s);
  }
  std::optional<pb::RankTimeSums> Sums() {
    return store::GetRankTimeSums(store_, "c-1", 1).value();
  }

  store::MemoryStore store_;
  FakeClock clock_;
  MonitorOptions options_;
  pb::Attempt attempt_;
  std::unique_ptr<AttemptMonitor> monitor_;
};

TEST_F(AttemptMonitorTest, AnAutoHangTimeoutFollowsThePaceOnceItIsKnown) {
  EXPECT_EQ(monitor_->HangTimeout("c-1", attempt_, 300s), 300s);  // the campaign's own
  for (int64_t s = 1; s <= 5; ++s) Step(s);
  EXPECT_EQ(monitor_->HangTimeout("c-1", attempt_, std::nullopt), 600s);  // too few steps
  for (int64_t s = 6; s <= 20; ++s) Step(s);
  EXPECT_EQ(monitor_->HangTimeout("c-1", attempt_, std::nullopt), 40s);  // 20 x 2 s
  monitor_->OnHeartbeat("c-1", 1, 0, 20, pb::WORKER_PHASE_CHECKPOINT);
  EXPECT_EQ(monitor_->HangTimeout("c-1", attempt_, std::nullopt), 600s);  // saving
}

TEST_F(AttemptMonitorTest, AnAttemptIsOverdueOnlyForTimeBelaydWatched) {
  const TimePoint t0 = clock_.Now();
  store::SetTime(attempt_.mutable_running_time(), t0);
  clock_.Advance(30s);
  EXPECT_FALSE(monitor_->Overdue("c-1", attempt_, 60s, t0).has_value());
  clock_.Advance(31s);
  EXPECT_EQ(monitor_->Overdue("c-1", attempt_, 60s, t0), 60s);
  EXPECT_FALSE(monitor_->Overdue("c-1", attempt_, 60s, t0 + 50s).has_value());  // belayd was away
  store::SetTime(attempt_.mutable_last_progress_time(), t0 + 100s);
  clock_.Advance(89s);  // t0 + 150 s
  EXPECT_FALSE(monitor_->Overdue("c-1", attempt_, 60s, t0).has_value());
  clock_.Advance(11s);
  EXPECT_EQ(monitor_->Overdue("c-1", attempt_, 60s, t0), 60s);
}

TEST_F(AttemptMonitorTest, ARestartedMonitorRebuildsThePaceAndTheSlowRankSums) {
  for (int64_t s = 1; s <= 20; ++s) Step(s, {0.1, 0.2, 0.3});
  const std::vector<double> means = monitor_->RankMeans("c-1", attempt_, 1);
  monitor_ = std::make_unique<AttemptMonitor>(store_, clock_, options_);
  EXPECT_EQ(monitor_->HangTimeout("c-1", attempt_, std::nullopt), 40s);
  ASSERT_EQ(monitor_->RankMeans("c-1", attempt_, 1).size(), 3u);
  // The sums were written at the first step only (rank_sums_interval): the rebuilt ones say so.
  EXPECT_DOUBLE_EQ(monitor_->RankMeans("c-1", attempt_, 1)[2], 0.3);
  EXPECT_DOUBLE_EQ(means[2], 0.3);
  EXPECT_TRUE(monitor_->RankMeans("c-1", attempt_, 2).empty());  // one step's sums
}

TEST_F(AttemptMonitorTest, SlowRankSumsAreWrittenAtMostOncePerInterval) {
  Step(1, {1, 2, 3});
  ASSERT_TRUE(Sums().has_value());
  EXPECT_EQ(Sums()->steps(), 1);
  Step(2, {1, 2, 3});
  EXPECT_EQ(Sums()->steps(), 1);  // a second later: not yet
  clock_.Advance(options_.rank_sums_interval);
  Step(3, {1, 2, 3});
  EXPECT_EQ(Sums()->steps(), 3);
  EXPECT_EQ(Sums()->through_step(), 3);
  EXPECT_DOUBLE_EQ(Sums()->compute_time_sum_s(2), 9.0);
  Step(4, {1, 2});  // not every rank's: not counted
  store::WriteBatch b;
  monitor_->EndOf(b, "c-1", 1, /*incident=*/false);
  ASSERT_TRUE(store_.Write(b, store::Durability::kSynced).ok());
  EXPECT_EQ(Sums()->steps(), 3);  // the end writes the rest
}

TEST_F(AttemptMonitorTest, AnIncidentKeepsTheLastStepReportsWholeAndNothingElse) {
  for (int64_t s = 1; s <= 3; ++s) Step(s, {0.1, 0.2, 0.3});
  store::WriteBatch b;
  monitor_->EndOf(b, "c-1", 1, /*incident=*/true);
  ASSERT_TRUE(store_.Write(b, store::Durability::kSynced).ok());
  const std::vector<pb::StepMetrics> kept = store::ListStepEvidence(store_, "c-1", 1).value();
  ASSERT_EQ(kept.size(), 2u);  // evidence_steps
  EXPECT_EQ(kept[0].step(), 2);
  EXPECT_EQ(kept[1].rank_compute_time_s_size(), 3);
}

TEST_F(AttemptMonitorTest, AnEndWithoutIncidentKeepsNoEvidence) {
  for (int64_t s = 1; s <= 3; ++s) Step(s, {0.1, 0.2, 0.3});
  store::WriteBatch b;
  monitor_->EndOf(b, "c-1", 1, /*incident=*/false);
  ASSERT_TRUE(store_.Write(b, store::Durability::kSynced).ok());
  EXPECT_TRUE(store::ListStepEvidence(store_, "c-1", 1).value().empty());
}

TEST_F(AttemptMonitorTest, TheAttemptRecordIsRewrittenForProgressAtABoundedRate) {
  Step(1);
  EXPECT_TRUE(monitor_->AttemptRecordDue("c-1", 1, false));
  Step(2);
  EXPECT_FALSE(monitor_->AttemptRecordDue("c-1", 1, false));
  EXPECT_TRUE(monitor_->AttemptRecordDue("c-1", 1, true));  // more than progress changed
  pb::Attempt stored;  // as the store has it: step 1's progress
  stored.set_number(1);
  stored.set_last_step(1);
  monitor_->ShowProgress("c-1", stored);
  EXPECT_EQ(stored.last_step(), 2);
  EXPECT_EQ(store::FromTimestamp(stored.last_progress_time()), clock_.Now() - 1s);
  clock_.Advance(options_.attempt_write_interval);
  EXPECT_TRUE(monitor_->AttemptRecordDue("c-1", 1, false));
}

TEST_F(AttemptMonitorTest, AHangReportNamesTheRanksFurthestBehindNotEveryRank) {
  EXPECT_EQ(monitor_->DescribeRanks("c-1", 1), "no heartbeats received");
  for (int r = 0; r < 20; ++r)
    monitor_->OnHeartbeat("c-1", 1, r, r == 7 ? 3 : 10, pb::WORKER_PHASE_FORWARD);
  clock_.Advance(12s);
  const std::string report = monitor_->DescribeRanks("c-1", 1);
  EXPECT_NE(report.find("rank 7: step 3, forward, 12 s ago"), std::string::npos) << report;
  EXPECT_NE(report.find("; 4 more ranks at step 10"), std::string::npos) << report;
  store::WriteBatch b;
  monitor_->EndOf(b, "c-1", 1, false);
  EXPECT_EQ(monitor_->DescribeRanks("c-1", 1), "no heartbeats received");
}

}  // namespace
}  // namespace belay::supervisor
