// GPT-2 on one GPU: bf16 activations and parameters, fp32 master weights, gradients and AdamW
// state, over the CUDA kernels (kernels/cuda). The same architecture and parameter layout as
// Gpt2 (the CPU reference), so a checkpoint or a CPU run can be compared tensor for tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/adamw.h"
#include "kernels/cuda/encoder.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/types.h"
#include "worker/model/gpu_model.h"
#include "worker/model/params.h"

namespace belay::model {

class CudaGpt2 {
 public:
  // Allocates parameters, optimizer state and the activations of a B×T micro-batch on the
  // current device. T must be a multiple of 8 and at most max_seq_len; C/NH a multiple of 8.
  // ResourceExhausted when the device memory does not suffice.
  // The attention kernels: kFused (head size 64, T a multiple of 64, else InvalidArgument)
  // keeps only a log-sum-exp per row and is the faster (1.6× the whole GPT-2 124M step on an
  // H100, docs/gpu.md); kMaterialised keeps the B·NH·T·T softmax weights of every layer for
  // backward and takes any head size that is a multiple of 8; kAuto: fused where it applies.
  enum class Attention { kAuto, kMaterialised, kFused };
  // With `sharded`, the optimizer state is that shard (ZeRO stage 1, or stage 2 with sharded
  // gradients; see ShardedOptimizer).
  static absl::StatusOr<std::unique_ptr<CudaGpt2>> Create(
      const ParameterLayout& layout, int B, int T, Attention attention = Attention::kAuto,
      const ShardedOptimizer* sharded = nullptr);
  ~CudaGpt2();
  CudaGpt2(const CudaGpt2&) = delete;
  CudaGpt2& operator=(const CudaGpt2&) = delete;

  int B() const { return B_; }
  int T() const { return T_; }
  // Whether attention runs fused (kernels/cuda/flash_attention.h) rather than materialised.
  bool fused_attention() const { return flash_; }
  // Bytes of device memory this model holds.
  size_t device_bytes() const { return device_bytes_; }

  // Sets the fp32 master weights (sharded: of the pieces) and the bf16 copy from host params
  // (all of them, layout order), and clears gradients and moments.
  absl::Status SetParameters(const float* host_params);
  // The fp32 master weights, layout order. Sharded: the pieces' master weights, and
  // elsewhere the bf16 working copy's values (what this rank computes with there).
  absl::Status GetParameters(float* host_params) const;
  // The accumulated fp32 gradients, layout order (FailedPrecondition at stage 2).
  absl::Status GetGradients(float* host_grads) const;
  // The AdamW moments (fp32; layout order, or shard order when sharded): read, or set (after
  // SetParameters, which clears them), for checkpoints.
  absl::Status GetMoments(float* host_m, float* host_v) const;
  absl::Status SetMoments(const float* host_m, const float* host_v);
  // The gradient buffer on the device (fp32, layout order, layout.total() elements; null at
  // stage 2) and the stream all of this model's work is queued on, for collectives over the
  // gradients.
  float* device_gradients() { return grads_; }
  cudaStream_t stream() const { return stream_; }

  // Clears the accumulated gradients (stage 2: the gradient shard).
  absl::Status ZeroGradients();

  // Runs the model on inputs, targets, mask (B,T, host memory) and returns the sum of the
  // per-position losses over positions whose mask is 1. With loss_scale > 0 it also prepares
  // Backward, which then backpropagates loss_scale × that sum; with 0 it only evaluates.
  absl::StatusOr<double> Forward(const int32_t* inputs, const int32_t* targets, const uint8_t* mask,
                                 float loss_scale);

  // Accumulates (+=) the gradients of the last training Forward; at stage 2 it writes them
  // into the group buffers instead (each cleared first). `hook` (when not null): see
  // BackwardHook.
  absl::Status Backward(BackwardHook* hook = nullptr);

  // The squared L2 norm of the accumulated gradients (deterministic, synchronises).
  absl::StatusOr<double> GradientSumOfSquares();

  // Multiplies the gradients by `clip` when it is below 1, then applies AdamW update `step`
  // (1-based) with `p`'s lr, betas and eps; weight decay `weight_decay` only on the tensors the
  // layout marks for it. Writes the new bf16 parameters. Not sharded only.
  absl::Status Update(const kernels::cpu::AdamWParams& p, float weight_decay, float clip);

  // --- Sharded (ZeRO stages 1 and 2) only; FailedPrecondition otherwise.
  // The fp32 device buffers: the summed gradient of the shard, the master shard, staging.
  float* device_gradient_shard() { return grad_shard_; }
  float* device_master() { return master_; }
  int64_t shard_size() const { return sharded_ ? sharded_->shard_size : 0; }
  bool sharded_gradients() const { return sharded_ && !sharded_->group_padded.empty(); }
  // Stage 1: two staging slots of staging_size() elements each (slot 0 or 1); null, 0 at
  // stage 2.
  float* device_staging(int slot) {
    return staging_ == nullptr ? nullptr : staging_ + slot * staging_size();
  }
  int64_t staging_size() const { return staging_ == nullptr ? 0 : sharded_->staging; }
  // Stage 1: staging slot [0, padded) = the gradients of `segments` one after another, then
  // zeros.
  absl::Status PackGradients(const std::vector<Segment>& segments, int64_t padded, int slot = 0);
  // Stage 2: the buffer Backward writes gradient group `group` into (see
  // GpuModel::DeviceGroupBuffer) and its size, group_padded[group]; null, 0 otherwise.
  float* device_group_buffer(int group);
  int64_t group_buffer_size(int group) const;
  // Stage 2: gradient shard [shard_offset, +n) = from[0, n) (device memory), or += with
  // `accumulate`.
  absl::Status AddToGradientShard(const float* from, int64_t n, int64_t shard_offset,
                                  bool accumulate);
  // The bf16 parameters of `segments` = bf16(from), fp32 device memory of `size` elements
  // read one segment after another.
  absl::Status UnpackParameters(const std::vector<Segment>& segments, const float* from,
                                int64_t size);
  // Squared L2 norm of the gradient shard (deterministic, synchronises).
  absl::StatusOr<double> GradientShardSumOfSquares();
  // Update() over the pieces: clip, AdamW on the master shard from the gradient shard, the
  // new bf16 values written at the pieces' places in the parameters.
  absl::Status UpdateShard(const kernels::cpu::AdamWParams& p, float weight_decay, float clip);

  // Per-position losses of the last Forward (0 where masked), B×T.
  absl::StatusOr<std::vector<float>> GetLosses() const;

  // Waits for all work queued by this model.
  absl::Status Synchronize() const;

 private:
  CudaGpt2(const ParameterLayout& layout, int B, int T, bool fused_attention,
           const ShardedOptimizer* sharded);
  // Elements of the master weights and moments: the shard, or all parameters.
  size_t StateSize() const;
  absl::Status Allocate();
  template <typename E>
  absl::Status Alloc(E** ptr, size_t count);

  const ParameterLayout& layout_;
  int B_, T_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<kernels::cuda::Blas> blas_;
  std::vector<void*> allocations_;
  size_t device_bytes_ = 0;
  bool have_grad_pass_ = false;
  bool flash_ = false;  // fused attention (head size 64, T a multiple of 64)
  std::optional<ShardedOptimizer> sharded_;
  std::vector<std::vector<Segment>> groups_;  // GradientGroups(layout_)

  using bf16 = kernels::cuda::bf16;
  // Parameters: bf16 working copy, fp32 master, fp32 gradients and moments (layout order).
  bf16* params_ = nullptr;
  float *master_ = nullptr, *grads_ = nullptr, *m_ = nullptr, *v_ = nullptr;
  float *grad_shard_ = nullptr, *staging_ = nullptr;  // sharded only; staging: stage 1
  // Stage 2: the embeddings' group buffer, and two for the other groups (ring_size_ each).
  float *embed_buffer_ = nullptr, *ring_ = nullptr;
  int64_t ring_size_ = 0;

  // Micro-batch inputs on the device.
  int32_t *inputs_ = nullptr, *targets_ = nullptr;
  uint8_t* mask_ = nullptr;
  int32_t *bucket_ids_ = nullptr, *bucket_starts_ = nullptr, *bucket_positions_ = nullptr;
  int n_bucket_ids_ = 0;

  // Activations (per layer where noted, layer-major).
  bf16* encoded_ = nullptr;  // (N,C)
  bf16 *ln1_ = nullptr, *qkv_ = nullptr, *atty_ = nullptr;
  bf16* att_ = nullptr;   // L×(B,NH,T,T) softmax weights, without flash attention
  float* lse_ = nullptr;  // L×(B,NH,T) log-sum-exp, with flash attention
  float *ln1_mean_ = nullptr, *ln1_rstd_ = nullptr;
  bf16 *residual2_ = nullptr, *ln2_ = nullptr, *fch_ = nullptr, *fch_gelu_ = nullptr;
  float *ln2_mean_ = nullptr, *ln2_rstd_ = nullptr;
  bf16* residual3_ = nullptr;
  bf16* lnf_ = nullptr;
  float *lnf_mean_ = nullptr, *lnf_rstd_ = nullptr;
  bf16* logits_ = nullptr;   // (N,Vp); dlogits after a training Forward
  float* losses_ = nullptr;  // (N)

  // Scratch shared by forward and backward.
  bf16* proj_ = nullptr;  // (N,C): attention / MLP projection before the residual add
  bf16* dres_ = nullptr;  // (N,C): gradient of the residual stream
  bf16* dc_ = nullptr;    // (N,C)
  bf16* d3c_ = nullptr;   // (N,3C)
  bf16* d4c_ = nullptr;   // (N,4C)
  bf16* att_scratch_ = nullptr;
  float* float_scratch_ = nullptr;  // bias gradient and LayerNorm backward partials
  size_t float_scratch_size_ = 0;
  double* norm_ = nullptr;  // one double
  double* norm_scratch_ = nullptr;
};

}  // namespace belay::model
