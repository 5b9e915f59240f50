#include "worker/train/checkpoint_interval.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace belay::train {
namespace {

TEST(DalyInterval, MatchesTheHigherOrderEstimate) {
  // A one-minute save, a failure every four hours: about 21 minutes between saves.
  EXPECT_NEAR(DalyInterval(60, 4 * 3600), 1274.83, 0.01);
  EXPECT_NEAR(DalyInterval(1, 50), 9.3444, 1e-4);
  EXPECT_NEAR(DalyInterval(4, 50), 17.4222, 1e-4);
}

TEST(DalyInterval, TendsToYoungsRootForCheapSaves) {
  const double young = std::sqrt(2 * 0.01 * 1e6);
  EXPECT_NEAR(DalyInterval(0.01, 1e6) / young, 1.0, 1e-3);
}

TEST(DalyInterval, GrowsWithTheTimeBetweenFailuresAndTheSaveCost) {
  EXPECT_LT(DalyInterval(10, 3600), DalyInterval(10, 7200));
  EXPECT_LT(DalyInterval(10, 3600), DalyInterval(20, 3600));
}

TEST(DalyInterval, SavesCostingTwiceTheFailureGapAreTakenOncePerGap) {
  EXPECT_EQ(DalyInterval(200, 100), 100);
  EXPECT_EQ(DalyInterval(201, 100.5), 100.5);
}

TEST(DalyInterval, NoCostOrNoFailureRateGivesNoInterval) {
  EXPECT_EQ(DalyInterval(0, 3600), 0);
  EXPECT_EQ(DalyInterval(-1, 3600), 0);
  EXPECT_EQ(DalyInterval(1, 0), 0);
  EXPECT_EQ(DalyInterval(std::nan(""), 3600), 0);
}

TEST(AutoCheckpointClock, NothingIsDueBeforeAStepHasBeenTimed) {
  AutoCheckpointClock clock(50, 0);
  EXPECT_FALSE(clock.Due(1e9));
  EXPECT_FALSE(clock.interval_s().has_value());
  EXPECT_FALSE(clock.save_cost_s().has_value());
}

TEST(AutoCheckpointClock, FirstSaveUsesTheStepTimeThenTheMeasuredCost) {
  AutoCheckpointClock clock(50, 100);  // starts at t = 100
  std::vector<int> saved_at;
  for (int step = 1; step <= 40; ++step) {
    const double now = 100 + step;  // one second a step
    clock.StepEnded(now);
    if (clock.Due(now)) {
      saved_at.push_back(step);
      clock.Saved(now, 4);  // a save holds training up 4 s (not simulated in the step times)
    }
  }
  // Before any save the cost is one step (1 s): 9.34 s. After it, 4 s: 17.42 s, so the next
  // would be at step 46.
  EXPECT_EQ(saved_at, (std::vector<int>{10, 28}));
  EXPECT_DOUBLE_EQ(*clock.save_cost_s(), 4);
  EXPECT_NEAR(*clock.interval_s(), 17.4222, 1e-4);
}

TEST(AutoCheckpointClock, AFreeSaveFallsBackToTheStepTime) {
  AutoCheckpointClock clock(50, 0);
  clock.StepEnded(2);
  clock.StepEnded(4);
  clock.Saved(4, 0);
  EXPECT_DOUBLE_EQ(*clock.save_cost_s(), 2);
  EXPECT_FALSE(clock.Due(4 + 12));
  EXPECT_TRUE(clock.Due(4 + 13.5));
}

}  // namespace
}  // namespace belay::train
