// The GPU model as the trainer sees it, without CUDA types: CudaGpt2 behind an interface that
// builds with and without the CUDA path (without it, CreateGpuModel is Unimplemented).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/adamw.h"
#include "worker/model/params.h"

namespace belay::model {

// GPT-2 on the current CUDA device: bf16 activations and parameters, fp32 master weights,
// gradients and AdamW moments, all in the parameter layout's order (see CudaGpt2).
class GpuModel {
 public:
  virtual ~GpuModel() = default;

  // The fp32 master weights and moments from host memory (m, v null: zero).
  virtual absl::Status SetState(const float* params, const float* m, const float* v) = 0;
  // The fp32 master weights and moments into host memory.
  virtual absl::Status GetState(float* params, float* m, float* v) const = 0;

  // Sum of the masked per-position losses of one micro-batch (B×T host arrays); loss_scale > 0
  // prepares Backward, 0 only evaluates.
  virtual absl::StatusOr<double> Forward(const int32_t* inputs, const int32_t* targets, const uint8_t* mask,
                                         float loss_scale) = 0;
  // Accumulates the gradients of the last training Forward.
  virtual absl::Status Backward() = 0;
  virtual absl::Status ZeroGradients() = 0;
  // The fp32 gradients on the device (layout order), for collectives once Synchronize returned.
  virtual std::span<float> DeviceGradients() = 0;
  // Squared L2 norm of the gradients (deterministic).
  virtual absl::StatusOr<double> GradientSumOfSquares() = 0;
  // Clip factor, then AdamW (weight decay on the tensors the layout marks).
  virtual absl::Status Update(const kernels::cpu::AdamWParams& p, float weight_decay, float clip) = 0;
  // Waits for the queued work.
  virtual absl::Status Synchronize() = 0;

  virtual size_t device_bytes() const = 0;
  // "fused" or "materialised" attention.
  virtual std::string attention() const = 0;
};

// A model for micro-batches of B sequences of T tokens on the current device, with every
// parameter zero until SetState. ResourceExhausted when it does not fit; InvalidArgument for
// shapes the kernels do not take; Unimplemented in a build without CUDA.
absl::StatusOr<std::unique_ptr<GpuModel>> CreateGpuModel(const ParameterLayout& layout, int B, int T);

}  // namespace belay::model
