// Learning-rate schedules.
#include "worker/model/schedule.h"

#include <algorithm>
#include <cmath>

namespace belay::model {

double LearningRate(const TrainSpec& t, int64_t total_steps, int64_t step) {
  step = std::clamp<int64_t>(step, 1, std::max<int64_t>(total_steps, 1));
  if (t.warmup_steps > 0 && step <= t.warmup_steps) {
    return t.lr * static_cast<double>(step) / static_cast<double>(t.warmup_steps);
  }
  if (t.lr_schedule == LrSchedule::kCosine) {
    int64_t span = total_steps - t.warmup_steps;
    if (span <= 0) return t.lr;
    double p = static_cast<double>(step - t.warmup_steps) / static_cast<double>(span);
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * p));
  }
  int64_t cooldown_start = total_steps - t.cooldown_steps;
  if (step <= cooldown_start || t.cooldown_steps <= 0) return t.lr;
  double p = static_cast<double>(step - cooldown_start) / static_cast<double>(t.cooldown_steps);
  if (t.cooldown == CooldownShape::kLinear) return t.lr + (t.min_lr - t.lr) * p;
  return t.min_lr + (t.lr - t.min_lr) * (1.0 - std::sqrt(p));
}

}  // namespace belay::model
