// The goodput ledger of a campaign with one crash.
#include "daemon/supervisor/goodput.h"

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
  a1.set_last_step(101);                              // 100 steps in 1000 s: 10 s a step
  SetTime(a1.mutable_last_progress_time(), t0 + 1060s);
  SetTime(a1.mutable_end_time(), t0 + 1090s);       // detected 30 s after the last step
  a2.set_number(2);
  a2.set_world_size(2);
  a2.set_state(pb::ATTEMPT_STATE_RUNNING);
  a2.set_start_checkpoint_step(80);                   // 21 steps lost
  SetTime(a2.mutable_start_time(), t0 + 1120s);
  SetTime(a2.mutable_first_step_time(), t0 + 1180s);  // 60 s restart

  pb::GoodputLedger g = ComputeGoodput({a1, a2}, t0 + 2180s);
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
  EXPECT_NEAR(s.productive_rank_hours() * 3600, 4300 - 420 - 60 - 120, 1e-6);
  EXPECT_NEAR(s.goodput_fraction(), 3700.0 / 4300.0, 1e-9);
}

TEST(Goodput, NothingSpentIsZeroNotADivisionByZero) {
  pb::GoodputLedger g = ComputeGoodput({}, TimePoint());
  EXPECT_EQ(g.summary().goodput_fraction(), 0.0);
  EXPECT_EQ(g.incidents_size(), 0);
}

}  // namespace
}  // namespace belay::supervisor
