// What one training step reports.
#pragma once

#include <cstdint>
#include <vector>

namespace belay::train {

struct StepMetrics {
  int64_t step = 0;             // updates done after this one (1-based)
  double loss = 0;              // mean cross-entropy over the counted positions of the batch
  double lr = 0;                // learning rate of this update
  double grad_norm = 0;         // global L2 norm before clipping
  double tokens_per_s = 0;      // batch tokens / step wall time
  double goldfish_dropped = 0;  // fraction of label positions Goldfish excluded
  double step_time_s = 0;
  int64_t tokens = 0;        // tokens trained on since step 0, this step's batch included
  uint64_t data_digest = 0;  // sum over the batch's sequences of a hash of their tokens
  // Payload bytes all ranks sent for this step's collectives (comm::CommStats' volume model),
  // the step's own bookkeeping (this count) excluded.
  int64_t comm_bytes = 0;
  // Per rank (index = rank): the step's wall time, and the part of it spent outside blocking
  // collectives (data, compute, optimizer). Ranks wait for each other, so wall times agree;
  // a slow rank shows in its compute time.
  std::vector<double> rank_step_time_s;
  std::vector<double> rank_compute_time_s;
};

}  // namespace belay::train
