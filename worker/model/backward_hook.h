// What a backward pass tells its caller about the gradient groups, on the CPU (Gpt2) and the
// GPU (GpuModel) alike: the caller can redirect a group's gradients (ZeRO-2 staging), and
// reduce a group as soon as it is complete while backward goes on with the next one.
#pragma once

#include "absl/status/status.h"
#include "worker/model/params.h"

namespace belay::model {

// Groups are numbered as GradientGroups numbers them: ln_f, layers L−1 … 0, the embeddings
// (L+1). The calls of one pass: Acquire(L+1); then for g = 0 … L: Acquire(g), Release(g);
// last Release(L+1). An error either returns ends Backward with that error.
class BackwardHook {
 public:
  virtual ~BackwardHook() = default;

  // Before Backward first writes group g's gradients. `into` holds where the model would
  // write them (for each of the group's segments, the field of that tensor points at the
  // segment's gradient; layer slices at that layer's slice; null where the model has no
  // gradient memory of its own); the hook may point them elsewhere. Backward ADDS to them.
  // On the GPU the model clears a group buffer of its own after Acquire: the caller must be
  // done with what the buffer held.
  virtual absl::Status Acquire(int group, ParameterLayout::Views<float>& into) = 0;

  // Once group g's gradients are complete for this pass (GPU: once the kernels that finish
  // them are queued on the model's stream).
  virtual absl::Status Release(int group) = 0;
};

}  // namespace belay::model
