// Where a training step is (heartbeats name each rank's last phase), and the time the rank
// spends waiting for the others in blocking collectives (the rest of a step is its own work,
// where a slow rank shows).
#pragma once

#include <atomic>
#include <chrono>
#include <string_view>

#include "worker/comm/communicator.h"

namespace belay::train {

enum class Phase { kData, kForward, kBackward, kCollective, kOptimizer, kEval, kCheckpoint };

// Adds the time its scope lasts to `total`.
class WaitClock {
 public:
  explicit WaitClock(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~WaitClock() {
    total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  WaitClock(const WaitClock&) = delete;
  WaitClock& operator=(const WaitClock&) = delete;

 private:
  double& total_;
  std::chrono::steady_clock::time_point start_;
};

// A step's phase, readable from any thread, and its time in blocking collectives so far.
struct StepProgress {
  std::atomic<Phase> phase{Phase::kData};
  double wait_s = 0;

  // Waits for collective `h`: the time goes to wait_s, and heartbeats say the rank is in a
  // collective meanwhile. Aborts the process if it failed (see CheckCollective).
  void Await(comm::CommHandle& h, std::string_view what);
};

}  // namespace belay::train
