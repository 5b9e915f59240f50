// The GPU model as the trainer sees it, without CUDA types: CudaGpt2 behind an interface that
// builds with and without the CUDA path (without it, CreateGpuModel is Unimplemented).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/adamw.h"
#include "worker/model/backward_hook.h"
#include "worker/model/params.h"

struct CUevent_st;  // a CUDA event (cudaEvent_t)

namespace belay::model {

// ZeRO stages 1 and 2: the model keeps fp32 master weights and AdamW moments only for
// `pieces`, runs of the flat parameters kept one after another in a shard of shard_size
// elements (the gaps are the padding of the shard plan: zero, never updated), and the summed
// gradient of that shard. The bf16 parameters stay whole.
//   Stage 1 (group_padded empty): the fp32 gradients stay whole too. `staging` is the size of
//   each of the two fp32 device buffers that buckets of gradients and master weights pass
//   through (the largest padded bucket): two, so that one bucket's reduce-scatter can run
//   while the next one is packed.
//   Stage 2 (group_padded set: one padded size per model::GradientGroups group, each at least
//   the group's elements): there is no whole gradient. Backward writes each group's
//   gradients into a group buffer (the group's segments one after another, zeros up to its
//   padded size), from which the trainer reduce-scatters it; `staging` is unused.
struct ShardedOptimizer {
  struct Piece {
    int64_t flat_offset = 0;
    int64_t shard_offset = 0;
    int64_t size = 0;
    bool decay = false;
  };
  int64_t shard_size = 0;
  std::vector<Piece> pieces;
  int64_t staging = 0;
  std::vector<int64_t> group_padded;
};

// GPT-2 on the current CUDA device: bf16 activations and parameters, fp32 master weights,
// gradients and AdamW moments, all in the parameter layout's order (see CudaGpt2).
class GpuModel {
 public:
  virtual ~GpuModel() = default;

  // The parameters (all, fp32, layout order) and the moments (the optimizer's elements: all
  // parameters, or the shard) from host memory; m, v null: zero.
  virtual absl::Status SetState(const float* params, const float* m, const float* v) = 0;
  // The same into host memory. With a sharded optimizer the parameters outside its pieces
  // are the bf16 working copy's values.
  virtual absl::Status GetState(float* params, float* m, float* v) const = 0;

  // Sum of the masked per-position losses of one micro-batch (B×T host arrays); loss_scale > 0
  // prepares Backward, 0 only evaluates.
  virtual absl::StatusOr<double> Forward(const int32_t* inputs, const int32_t* targets,
                                         const uint8_t* mask, float loss_scale) = 0;
  // Accumulates the gradients of the last training Forward (stage 2: writes them into the
  // group buffers), telling `hook` (when not null) about each gradient group.
  virtual absl::Status Backward(BackwardHook* hook = nullptr) = 0;
  // Clears the accumulated gradients (stage 2: the gradient shard).
  virtual absl::Status ZeroGradients() = 0;
  // The fp32 gradients on the device (layout order), for collectives once Synchronize
  // returned; empty at stage 2.
  virtual std::span<float> DeviceGradients() = 0;
  // Squared L2 norm of the gradients (deterministic).
  virtual absl::StatusOr<double> GradientSumOfSquares() = 0;
  // Clip factor, then AdamW (weight decay on the tensors the layout marks).
  virtual absl::Status Update(const kernels::cpu::AdamWParams& p, float weight_decay,
                              float clip) = 0;
  // Waits for the queued work.
  virtual absl::Status Synchronize() = 0;
  // Marks: a mark is the work queued on the model's stream so far. Mark(slot) records one in
  // `slot` (0 … kMarkSlots-1, replacing the slot's earlier mark) and returns the CUDA event
  // that completes with it, for comm::Communicator::OrderAfter: a collective can then read
  // what the model wrote without the host waiting for the model's stream. AwaitMark(slot)
  // blocks until the slot's mark has completed (at once for a slot never marked).
  static constexpr int kMarkSlots = 3;
  virtual absl::StatusOr<CUevent_st*> Mark(int slot) = 0;
  virtual absl::Status AwaitMark(int slot) = 0;

  // --- With a sharded optimizer (ZeRO stages 1 and 2) only; FailedPrecondition otherwise.
  // The fp32 device buffers: the summed gradient of the shard and the master shard (shard
  // order).
  virtual std::span<float> DeviceGradientShard() = 0;
  virtual std::span<float> DeviceMasterShard() = 0;
  // Stage 1: two staging slots (0, 1) of ShardedOptimizer::staging elements each (empty at
  // stage 2).
  virtual std::span<float> DeviceStaging(int slot) = 0;
  // Stage 1: staging slot [0, padded) = the gradients of `segments` one after another, then
  // zeros.
  virtual absl::Status PackGradients(const std::vector<Segment>& segments, int64_t padded,
                                     int slot) = 0;
  // Stage 2: the buffer Backward writes gradient group `group` into, group_padded[group]
  // elements. The embeddings' group has one of its own (their gradient collects during the
  // whole pass); the other groups take turns in two (group % 2), so a group's buffer is
  // written again two groups later. Empty at stage 1 or for a group out of range.
  virtual std::span<float> DeviceGroupBuffer(int group) = 0;
  // Stage 2: gradient shard [shard_offset, +from.size()) = `from` (device memory), or += it
  // with `accumulate`. Queued on the model's stream.
  virtual absl::Status AddToGradientShard(std::span<const float> from, int64_t shard_offset,
                                          bool accumulate) = 0;
  // The bf16 parameters of `segments` from fp32 values in device memory (`from`: a staging
  // slot or a group buffer), read one segment after another.
  virtual absl::Status UnpackParameters(const std::vector<Segment>& segments,
                                        std::span<const float> from) = 0;
  // Squared L2 norm of the gradient shard.
  virtual absl::StatusOr<double> GradientShardSumOfSquares() = 0;
  // Clip, then AdamW over the pieces; the new bf16 values land at the pieces' places.
  virtual absl::Status UpdateShard(const kernels::cpu::AdamWParams& p, float weight_decay,
                                   float clip) = 0;

  virtual size_t device_bytes() const = 0;
  // "fused" or "materialised" attention.
  virtual std::string attention() const = 0;
};

// A model for micro-batches of B sequences of T tokens on the current device, with every
// parameter zero until SetState. ResourceExhausted when it does not fit; InvalidArgument for
// shapes the kernels do not take; Unimplemented in a build without CUDA.
// With `sharded`, the optimizer state is that shard (ZeRO stage 1, or 2 with group_padded).
absl::StatusOr<std::unique_ptr<GpuModel>> CreateGpuModel(const ParameterLayout& layout, int B,
                                                         int T,
                                                         const ShardedOptimizer* sharded = nullptr);

}  // namespace belay::model
