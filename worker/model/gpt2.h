// GPT-2 forward and backward passes over the CPU kernels, for micro-batches of B×T tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "worker/model/backward_hook.h"
#include "worker/model/cpu_model.h"
#include "worker/model/params.h"

namespace belay::model {

// Activations and scratch for one micro-batch shape. Not thread-safe; one per rank.
class Gpt2 final : public CpuModel {
 public:
  // B sequences of T tokens (T <= config.max_seq_len).
  Gpt2(const ParameterLayout& layout, int B, int T);

  int B() const override { return B_; }
  int T() const override { return T_; }

  // Runs the model on inputs (B,T) and returns the sum of the per-position cross-entropy
  // losses over positions whose mask is 1 (targets (B,T), mask (B,T)). Keeps the
  // activations that Backward needs.
  double Forward(const float* params, const int32_t* inputs, const int32_t* targets,
                 const uint8_t* mask) override;

  // Backpropagates loss_scale × (the summed loss of the last Forward) and ACCUMULATES the
  // parameter gradients into grads (same layout as params). With loss_scale = 1 / (counted
  // positions of the whole batch) the gradients over all micro-batches add up to the
  // gradient of the batch's mean loss.
  void Backward(const float* params, float* grads, float loss_scale) override;
  // The same, telling `hook` about each gradient group (see BackwardHook), which may point
  // the gradients elsewhere; `grads` may be null when it points every group elsewhere.
  absl::Status Backward(const float* params, float* grads, float loss_scale,
                        BackwardHook& hook) override;

  // Per-position losses of the last Forward (0 where masked), B×T.
  const std::vector<float>& losses() const { return losses_; }
  // Logits of the last Forward, B×T×Vp (padding columns included).
  const std::vector<float>& logits() const { return logits_; }

  // Bytes of the activation and scratch buffers this object holds for its B×T shape (every
  // buffer member below counts: a new one belongs in the sum).
  int64_t ActivationBytes() const override;

 private:
  const ParameterLayout& layout_;
  std::vector<std::vector<Segment>> groups_;  // GradientGroups(layout_)
  int B_, T_;
  const int32_t* inputs_ = nullptr;
  const int32_t* targets_ = nullptr;
  const uint8_t* mask_ = nullptr;

  // Forward activations, per layer where noted (layer-major).
  std::vector<float> encoded_;                    // (B,T,C)
  std::vector<float> ln1_, ln1_mean_, ln1_rstd_;  // L×(B,T,C), L×(B,T)
  std::vector<float> qkv_;                        // L×(B,T,3C)
  std::vector<float> atty_;                       // L×(B,T,C)
  std::vector<float> att_;                        // L×(B,NH,T,T)
  std::vector<float> attproj_, residual2_;        // L×(B,T,C)
  std::vector<float> ln2_, ln2_mean_, ln2_rstd_;  // L×(B,T,C), L×(B,T)
  std::vector<float> fch_, fch_gelu_;             // L×(B,T,4C)
  std::vector<float> fcproj_, residual3_;         // L×(B,T,C)
  std::vector<float> lnf_, lnf_mean_, lnf_rstd_;  // (B,T,C), (B,T)
  std::vector<float> logits_, probs_;             // (B,T,Vp)
  std::vector<float> losses_;                     // (B,T)

  // Backward buffers: one layer's worth, reused from the last layer to the first.
  std::vector<float> dlogits_, dlnf_;
  std::vector<float> dres_a_, dres_b_;  // gradient of the residual stream, ping-pong
  std::vector<float> dresidual2_, dfcproj_, dfch_gelu_, dfch_, dln2_, dattproj_, datty_, dqkv_,
      dln1_, att_scratch_;
};

}  // namespace belay::model
