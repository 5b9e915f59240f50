// Where one rank's gradients live, and the device work on them that the gradient
// synchronisers (gradient_sync.h) need: host memory next to the CPU model, or the GPU
// model's device memory. The synchronisers are the same for both; the spans they get are in
// the memory the communicator's float collectives take.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/model/gpu_model.h"
#include "worker/model/params.h"
#include "worker/train/shard_plan.h"

namespace belay::train {

class GradientDevice {
 public:
  virtual ~GradientDevice() = default;

  // Clears the accumulated gradients before a step (stages 0 and 1: the whole gradient; on
  // the GPU at stage 2: the shard, which no backward pass may write when a batch has no
  // counted position).
  virtual absl::Status Zero() = 0;
  // The whole gradient, layout order (stages 0 and 1; empty at stage 2).
  virtual std::span<float> Whole() = 0;
  // The summed gradient of this rank's shard (stages 1 and 2; empty at stage 0).
  virtual std::span<float> Shard() = 0;

  // Waits until the work queued so far is complete (the GPU's stream; at once on the host,
  // whose work is complete when a call returns).
  virtual absl::Status Drain() = 0;
  // Slots 0 … model::GpuModel::kMarkSlots-1, one per buffer that collectives overlap
  // compute through: a collective started after OrderCollectives(slot) reads what the
  // device wrote before it, without the host waiting; AwaitSlot(slot) returns once that work
  // is complete. Immediate on the host.
  virtual absl::Status OrderCollectives(int slot) = 0;
  virtual absl::Status AwaitSlot(int slot) = 0;

  // Stage 1: two staging buffers (slots 0, 1) of the largest padded bucket, and bucket b's
  // gradients packed into one (its segments one after another, then zeros).
  virtual std::span<float> Staging(int slot) = 0;
  virtual absl::Status PackGradients(const Bucket& b, int slot) = 0;

  // Stage 2: the buffer gradient group `group`'s bucket is written into during backward
  // (one for the embeddings, two taking turns, group % 2, for the rest), at least the
  // bucket's padded size. PrepareGroupBuffer readies it for a backward pass, before the
  // model writes the group: on the host it clears it and points `into` at it; the GPU model
  // binds and clears its own buffer.
  virtual std::span<float> GroupBuffer(int group) = 0;
  virtual void PrepareGroupBuffer(const Bucket& b, std::span<float*> into) = 0;
  // Shard[shard_offset, +from.size()) = `from`, or += it with `accumulate`.
  virtual absl::Status AddToShard(std::span<const float> from, int64_t shard_offset,
                                  bool accumulate) = 0;

  // Squared L2 norm of the whole gradient: on the host the sum over `owned` (this rank's
  // pieces), which the ranks still add up; on the GPU over all of it (`all_ranks`).
  struct Squares {
    double sum = 0;
    bool all_ranks = false;
  };
  virtual absl::StatusOr<Squares> WholeSquares(const std::vector<OwnedPiece>& owned) = 0;
  // Squared L2 norm of the shard's `owned` pieces (this rank's part of the sum).
  virtual absl::StatusOr<double> ShardSquares(const std::vector<OwnedPiece>& owned) = 0;

  // After a sharded update (stages 1, 2): this rank's updated slice of bucket b, to
  // all-gather into `buffer` (on the host copied into the buffer's own slice, from the
  // parameters; on the GPU the master shard's slice), and the gathered bucket unpacked into
  // the parameters the model computes with.
  virtual std::span<const float> ParameterSlice(const Bucket& b, std::span<float> buffer) = 0;
  virtual absl::Status UnpackParameters(const Bucket& b, std::span<const float> buffer) = 0;

  // Bytes of gradient memory held between steps or during backward (the memory line's
  // gradient_bytes).
  virtual int64_t bytes() const = 0;
};

// Host memory for ZeRO stage `stage` on rank `rank` of `plan`; `params` is the parameter
// buffer the CPU model computes with (gathers write into it). Keeps references to both.
std::unique_ptr<GradientDevice> MakeHostGradients(const ShardPlan& plan, int rank, int stage,
                                                  float* params);

// The GPU model's memory; collectives are ordered after its stream through `comm`. Keeps
// references to all three.
std::unique_ptr<GradientDevice> MakeGpuGradients(const ShardPlan& plan, int stage,
                                                 model::GpuModel& gpu, comm::Communicator& comm);

}  // namespace belay::train
