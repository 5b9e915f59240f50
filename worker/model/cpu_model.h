// The CPU forward and backward of a model, whatever its architecture (Gpt2, ApertusModel):
// what the trainer calls.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "worker/model/backward_hook.h"

namespace belay::model {

// One micro-batch shape (B sequences of T tokens) of a model on the CPU kernels: activations
// and scratch. Not thread-safe; one per rank.
class CpuModel {
 public:
  virtual ~CpuModel() = default;

  virtual int B() const = 0;
  virtual int T() const = 0;

  // Runs the model on inputs (B,T) and returns the summed cross-entropy over the counted
  // positions (mask 1, and what the architecture masks itself, e.g. end-of-document tokens).
  // Keeps what Backward needs.
  virtual double Forward(const float* params, const int32_t* inputs, const int32_t* targets,
                         const uint8_t* mask) = 0;
  // Backpropagates loss_scale × (the summed loss of the last Forward), ADDING the parameter
  // gradients into grads (laid out like the parameters).
  virtual void Backward(const float* params, float* grads, float loss_scale) = 0;
  // The same, telling `hook` about each gradient group; `grads` may be null when the hook
  // points every group elsewhere.
  virtual absl::Status Backward(const float* params, float* grads, float loss_scale,
                                BackwardHook& hook) = 0;

  // Bytes of the activation and scratch buffers the model holds for its B×T shape.
  virtual int64_t ActivationBytes() const = 0;
};

}  // namespace belay::model
