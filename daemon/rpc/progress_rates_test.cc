// SetRecentRates: the means and ETA the coordinator API shows, for any step reports the
// worker link lets through (finite, not negative).
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <vector>

#include "daemon/rpc/coordinator_service.h"

namespace belay::rpc {
namespace {

std::vector<v1::StepMetrics> Reports(std::initializer_list<double> step_times,
                                     double tokens_per_s) {
  std::vector<v1::StepMetrics> out;
  for (double t : step_times) {
    v1::StepMetrics m;
    m.set_step_time_s(t);
    m.set_tokens_per_s(tokens_per_s);
    out.push_back(m);
  }
  return out;
}

TEST(SetRecentRates, GivesTheMeansAndAnEtaFromTheMeanStepTime) {
  const TimePoint now = TimePoint{} + std::chrono::hours(1000);
  v1::Progress p;
  SetRecentRates(Reports({1.0, 3.0}, 500.0), 100, now, &p);
  EXPECT_DOUBLE_EQ(p.step_time_s(), 2.0);
  EXPECT_DOUBLE_EQ(p.tokens_per_s(), 500.0);
  ASSERT_TRUE(p.has_eta());
  EXPECT_EQ(p.eta().seconds(), 200);
  EXPECT_EQ(p.estimated_end_time().seconds(), 1000 * 3600 + 200);
}

TEST(SetRecentRates, NoEtaWithoutStepsLeftOrStepTime) {
  v1::Progress done, idle;
  SetRecentRates(Reports({1.0}, 1.0), 0, TimePoint{}, &done);
  SetRecentRates(Reports({0.0, 0.0}, 1.0), 10, TimePoint{}, &idle);
  EXPECT_FALSE(done.has_eta());
  EXPECT_FALSE(idle.has_eta());
}

// Reports of the largest finite times summed to infinity, and an ETA beyond int64's
// nanoseconds was converted to an integer: undefined behaviour that UBSan caught under the
// coordinator fuzzer.
TEST(SetRecentRates, HugeStepTimesGiveFiniteMeansAndNoEta) {
  v1::Progress p;
  SetRecentRates(Reports({DBL_MAX, DBL_MAX, DBL_MAX}, DBL_MAX), 1, TimePoint{}, &p);
  EXPECT_TRUE(std::isfinite(p.step_time_s()));
  EXPECT_TRUE(std::isfinite(p.tokens_per_s()));
  EXPECT_FALSE(p.has_eta());
  EXPECT_FALSE(p.has_estimated_end_time());

  v1::Progress far;
  SetRecentRates(Reports({1e9}, 1.0), int64_t{1} << 40, TimePoint{}, &far);
  EXPECT_FALSE(far.has_eta());

  v1::Progress near_cap;
  SetRecentRates(Reports({kMaxEtaSeconds / 2}, 1.0), 2, TimePoint{}, &near_cap);
  ASSERT_TRUE(near_cap.has_eta());
  EXPECT_EQ(near_cap.eta().seconds(), static_cast<int64_t>(kMaxEtaSeconds));
}

}  // namespace
}  // namespace belay::rpc
