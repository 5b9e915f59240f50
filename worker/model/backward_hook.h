// What a backward pass tells its caller about the gradient groups, for every architecture, on
// the CPU (Gpt2, ApertusModel) and the GPU (GpuModel) alike: the caller can redirect a group's
// gradients (ZeRO-2 staging), and reduce a group as soon as it is complete while backward goes on
// with the next one.
#pragma once

#include <span>

#include "absl/status/status.h"
#include "worker/model/params.h"

namespace belay::model {

// Groups are numbered as the architecture's gradient groups (GradientGroups,
// ApertusGradientGroups): the final norm (and an untied head), layers L−1 … 0, the embeddings
// (L+1). The calls of one pass: Acquire(L+1); then for g = 0 … L: Acquire(g), Release(g);
// last Release(L+1). An error either returns ends Backward with that error.
class BackwardHook {
 public:
  virtual ~BackwardHook() = default;

  // Before Backward first writes group g's gradients. `into` holds where the model would
  // write them, one pointer per tensor of the layout (see PointAtFlat: null where the model
  // has no gradient memory of its own); the hook may point the group's entries elsewhere
  // (PointAtPacked). Backward ADDS to them.
  // On the GPU the model clears a group buffer of its own after Acquire: the caller must be
  // done with what the buffer held.
  virtual absl::Status Acquire(int group, std::span<float*> into) = 0;

  // Once group g's gradients are complete for this pass (GPU: once the kernels that finish
  // them are queued on the model's stream).
  virtual absl::Status Release(int group) = 0;
};

// Backward without a hook: every group's gradients where the model would write them.
class NoBackwardHook final : public BackwardHook {
 public:
  absl::Status Acquire(int, std::span<float*>) override { return absl::OkStatus(); }
  absl::Status Release(int) override { return absl::OkStatus(); }
};

}  // namespace belay::model
