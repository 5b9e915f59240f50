// How the ranks combine their gradients and share out the update: one synchroniser per ZeRO
// stage (docs/distributed.md), the same on CPUs and GPUs (the device's side is a
// GradientDevice). A step calls, in this order: BeginStep; for each micro-batch a backward
// pass told HookFor(micro) (none when null); Reduce after the last; SquaredNorm; the
// optimizer over OwnedGradients; GatherParameters. Every rank makes the same calls. A failed
// collective or device call aborts the process (CheckCollective).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "worker/comm/communicator.h"
#include "worker/model/backward_hook.h"
#include "worker/train/gradient_device.h"
#include "worker/train/shard_plan.h"
#include "worker/train/step_phase.h"

namespace belay::train {

class GradientSync {
 public:
  virtual ~GradientSync() = default;

  // Before the step's first backward pass: the gradients accumulate from zero.
  virtual void BeginStep() = 0;
  // The hook for the backward pass of micro-batch `micro` (0-based; `last`: the step's
  // last), or null when it needs none.
  virtual model::BackwardHook* HookFor(int64_t micro, bool last) = 0;
  // After the last micro-batch's backward pass (or, on a GPU, where a batch without a
  // counted position runs none, instead of it): OwnedGradients holds the sum over all ranks.
  virtual void Reduce() = 0;
  // The squared L2 norm of the summed gradient, the same bits on every rank. Collective.
  virtual double SquaredNorm() = 0;
  // The summed gradient of what this rank updates: stage 0 the whole gradient, 1 and 2 the
  // shard.
  virtual std::span<float> OwnedGradients() = 0;
  // After the optimizer: every rank's updated parameters to every rank (stages 1 and 2).
  // Collective.
  virtual void GatherParameters() = 0;
};

// The synchroniser of ZeRO stage `stage` (0, 1 or 2) for rank comm.rank() of `plan`
// (`owned`: its pieces, in shard order). Waits go to `progress`. Keeps references to all.
std::unique_ptr<GradientSync> MakeGradientSync(int stage, const ShardPlan& plan,
                                               const std::vector<OwnedPiece>& owned,
                                               comm::Communicator& comm, GradientDevice& device,
                                               StepProgress& progress);

}  // namespace belay::train
