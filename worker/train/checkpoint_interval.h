// checkpoint.every_steps = "auto": when to save, by the Young/Daly rule. A save costs δ
// seconds of training and a failure loses the work since the last save; with failures a mean
// time M apart, the interval between saves that loses the least time is Daly's higher-order
// estimate of sqrt(2δM) (J. T. Daly, "A higher order estimate of the optimum checkpoint
// interval for restart dumps", FGCS 22, 2006). δ is measured from this run's own saves (the
// time they hold training up: the whole write when synchronous, the copy and the wait for the
// writer when asynchronous); before the first one, one step's time stands in for it.
#pragma once

#include <cstdint>
#include <optional>

namespace belay::train {

// Daly's optimum interval between the starts of consecutive saves, in seconds, for a save
// cost `save_s` and a mean time between failures `mtbf_s`: sqrt(2δM)·(1 + √(δ/2M)/3 + δ/18M) − δ
// when δ < 2M, else M. Both must be positive (a non-positive δ gives 0).
double DalyInterval(double save_s, double mtbf_s);

// Decides, step by step, whether a save is due. Times are seconds on a monotonic clock.
class AutoCheckpointClock {
 public:
  // `mtbf_s`: the mean time between failures the run expects (> 0); `start`: when training
  // began (a resumed run starts from a saved state, so nothing before it is at risk).
  AutoCheckpointClock(double mtbf_s, double start);

  // A step ended at `now`: the time since the previous one (or since the start) is its
  // duration, which stands in for the save cost until a save has been measured.
  void StepEnded(double now);
  // Whether the time since the last save point has reached the interval.
  bool Due(double now) const;
  // A save of the state as of time `at` completed; training was held up `cost_s` by it.
  void Saved(double at, double cost_s);

  double mtbf_s() const { return mtbf_s_; }
  // The save cost the interval is computed for: the last measured one (when above zero),
  // else the mean step time; nullopt before either.
  std::optional<double> save_cost_s() const;
  // The current interval in seconds; nullopt before any step.
  std::optional<double> interval_s() const;

 private:
  double mtbf_s_;
  double last_save_at_;
  double last_step_end_;
  double step_time_sum_ = 0;
  int64_t steps_ = 0;
  std::optional<double> measured_cost_;
};

}  // namespace belay::train
