// Learning-rate schedules: cosine with linear warmup, and WSD (warmup, stable, cooldown).
#pragma once

#include <cstdint>

#include "common/campaign_spec.h"

namespace belay::model {

// Learning rate for optimizer update `step` (1-based, 1..total_steps) under the campaign's
// schedule:
//   warmup (both): lr · step / warmup_steps for step <= warmup_steps;
//   cosine: min_lr + ½(lr − min_lr)(1 + cos(π·p)), p = (step − warmup) / (total − warmup);
//   wsd: lr until the last cooldown_steps steps, then with p = (step − (total − cooldown)) /
//        cooldown in (0, 1]: linear lr + (min_lr − lr)·p, or 1-sqrt min_lr + (lr − min_lr)(1 − √p).
// Steps past total_steps get the final value.
double LearningRate(const TrainSpec& train, int64_t total_steps, int64_t step);

}  // namespace belay::model
