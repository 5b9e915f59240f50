// Young/Daly checkpoint intervals: see checkpoint_interval.h.
#include "worker/train/checkpoint_interval.h"

#include <cmath>

namespace belay::train {

double DalyInterval(double save_s, double mtbf_s) {
  if (!(save_s > 0) || !(mtbf_s > 0)) return 0;
  if (save_s >= 2 * mtbf_s) return mtbf_s;
  const double r = save_s / (2 * mtbf_s);
  return std::sqrt(2 * save_s * mtbf_s) * (1 + std::sqrt(r) / 3 + r / 9) - save_s;
}

AutoCheckpointClock::AutoCheckpointClock(double mtbf_s, double start)
    : mtbf_s_(mtbf_s), last_save_at_(start), last_step_end_(start) {}

void AutoCheckpointClock::StepEnded(double now) {
  const double d = now - last_step_end_;
  last_step_end_ = now;
  if (d > 0) {
    step_time_sum_ += d;
    ++steps_;
  }
}

bool AutoCheckpointClock::Due(double now) const {
  const std::optional<double> tau = interval_s();
  return tau && now - last_save_at_ >= *tau;
}

void AutoCheckpointClock::Saved(double at, double cost_s) {
  last_save_at_ = at;
  measured_cost_ = cost_s;
}

std::optional<double> AutoCheckpointClock::save_cost_s() const {
  if (measured_cost_ && *measured_cost_ > 0) return measured_cost_;
  if (steps_ == 0) return std::nullopt;
  return step_time_sum_ / static_cast<double>(steps_);
}

std::optional<double> AutoCheckpointClock::interval_s() const {
  const std::optional<double> delta = save_cost_s();
  if (!delta) return std::nullopt;
  return DalyInterval(*delta, mtbf_s_);
}

}  // namespace belay::train
