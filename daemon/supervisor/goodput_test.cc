// The goodput ledger of a campaign with one crash.
#include "daemon/supervisor/goodput.h"

#include <cmath>
#include <vector>

#include "daemon/supervisor/supervisor.h"
#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

using namespace std::chrono_literals;

TEST(Goodput, ACrashCostsItsLostStepsDetectionAndRestart) {
  const TimePoint t0(std::chrono::seconds(1'800'000'000));
  pb::Attempt a1, a2;
  a1.set_number(1);
  a1.set_world_size(2);
  a1.set_state(pb::ATTEMPT_STATE_ENDED);
  a1.set_end_reason(pb::END_REASON_RANK_CRASH);
  SetTime(a1.mutable_start_time(), t0);
  SetTime(a1.mutable_first_step_time(), t0 + 60s);  // start-up
  a1.set_first_step(1);
  a1.set_last_step(101);  // 100 steps in 1000 s: 10 s a step
  SetTime(a1.mutable_last_progress_time(), t0 + 1060s);
  SetTime(a1.mutable_end_time(), t0 + 1090s);  // detected 30 s after the last step
  a2.set_number(2);
  a2.set_world_size(2);
  a2.set_state(pb::ATTEMPT_STATE_RUNNING);
  a2.set_start_checkpoint_step(80);  // 21 steps lost
  SetTime(a2.mutable_start_time(), t0 + 1120s);
  SetTime(a2.mutable_first_step_time(), t0 + 1180s);  // 60 s restart

  // Two checkpoints: each held both ranks up, 3 s and 2 s; one odd report counts nothing.
  std::vector<pb::Checkpoint> cks(2);
  for (pb::Checkpoint& ck : cks) {
    for (double s : {3.0, 2.0}) ck.add_shards()->set_blocked_time_s(s);
  }
  cks[1].add_shards()->set_blocked_time_s(-1);
  cks[1].add_shards()->set_blocked_time_s(std::nan(""));
  pb::GoodputLedger g = ComputeGoodput({a1, a2}, cks, t0 + 2180s);
  ASSERT_EQ(g.incidents_size(), 1);
  const pb::GoodputIncident& inc = g.incidents(0);
  EXPECT_EQ(inc.lost_steps(), 21);
  EXPECT_NEAR(inc.lost_work_rank_hours() * 3600, 21 * 10 * 2, 1e-6);
  EXPECT_NEAR(inc.detection_rank_hours() * 3600, 30 * 2, 1e-6);
  EXPECT_NEAR(inc.restart_rank_hours() * 3600, 60 * 2, 1e-6);
  EXPECT_NEAR(inc.downtime_s(), 120, 1e-6);
  const pb::GoodputSummary& s = g.summary();
  EXPECT_EQ(s.incidents(), 1);
  EXPECT_NEAR(s.spent_rank_hours() * 3600, 1090 * 2 + 1060 * 2, 1e-6);
  EXPECT_NEAR(s.checkpoint_rank_hours() * 3600, 10, 1e-9);
  EXPECT_NEAR(s.productive_rank_hours() * 3600, 4300 - 420 - 60 - 120 - 10, 1e-6);
  EXPECT_NEAR(s.goodput_fraction(), 3690.0 / 4300.0, 1e-9);
}

TEST(Goodput, NothingSpentIsZeroNotADivisionByZero) {
  pb::GoodputLedger g = ComputeGoodput({}, {}, TimePoint());
  EXPECT_EQ(g.summary().goodput_fraction(), 0.0);
  EXPECT_EQ(g.incidents_size(), 0);
}

TEST(EstimateMtbf, TheCampaignsFailuresAndRunTimeWeighAgainstThePrior) {
  const TimePoint t0(std::chrono::seconds(1'800'000'000));
  auto attempt = [&](int n, pb::AttemptState state, pb::EndReason reason, std::chrono::seconds from,
                     std::chrono::seconds to) {
    pb::Attempt a;
    a.set_number(n);
    a.set_state(state);
    a.set_end_reason(reason);
    SetTime(a.mutable_start_time(), t0 + from);
    if (state == pb::ATTEMPT_STATE_ENDED) SetTime(a.mutable_end_time(), t0 + to);
    return a;
  };
  EXPECT_EQ(EstimateMtbf({}, 4h), 4h);  // nothing known yet: the prior
  std::vector<pb::Attempt> as;
  as.push_back(attempt(1, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_TIME_LIMIT, 0s, 2h));
  EXPECT_EQ(EstimateMtbf(as, 4h), 6h);  // two hours without a failure
  as.push_back(attempt(2, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_NODE_FAILURE, 2h, 3h));
  as.push_back(attempt(3, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_RANK_CRASH, 3h, 4h));
  EXPECT_EQ(EstimateMtbf(as, 4h), 28800s / 3);
  // A NaN rollback and a user's cancel are no failures of the machine; a running attempt and
  // one still queued have no run time yet.
  as.push_back(attempt(4, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_NAN, 4h, 5h));
  as.push_back(attempt(5, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_CANCELLED_BY_USER, 5h, 6h));
  as.push_back(attempt(6, pb::ATTEMPT_STATE_RUNNING, pb::END_REASON_UNSPECIFIED, 6h, 6h));
  pb::Attempt queued;
  queued.set_state(pb::ATTEMPT_STATE_QUEUED);
  as.push_back(queued);
  EXPECT_EQ(EstimateMtbf(as, 4h), 36000s / 3);
  // Hangs, lost memory and preemption count.
  as.push_back(attempt(8, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_HANG, 6h, 7h));
  as.push_back(attempt(9, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_OUT_OF_MEMORY, 7h, 7h));
  as.push_back(attempt(10, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_PREEMPTED, 7h, 8h));
  EXPECT_EQ(EstimateMtbf(as, 4h), 12h / 6);
  EXPECT_EQ(EstimateMtbf(as, 0s), 28800s / 6);
  EXPECT_EQ(EstimateMtbf({attempt(1, pb::ATTEMPT_STATE_ENDED, pb::END_REASON_HANG, 0s, 0s)}, 0s),
            1s);
}

}  // namespace
}  // namespace belay::supervisor
