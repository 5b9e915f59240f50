// Apertus (Llama-family) model on the CPU kernels: config, parameter layout, initialisation,
// forward and backward for micro-batches of B×T tokens, and model FLOPs per token for MFU.
// The trainer reaches it through model::Architecture (model.arch = "apertus").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/gqa_attention.h"
#include "kernels/rope.h"
#include "worker/model/backward_hook.h"
#include "worker/model/cpu_model.h"
#include "worker/model/params.h"

namespace belay::model {

// The MLP's activation: the campaign file's model.activation.
using belay::MlpActivation;

struct ApertusConfig {
  int vocab_size = 0;  // V: real tokens
  int n_layer = 0;
  int d_model = 0;    // C
  int n_head = 0;     // query heads; d_model = n_head × head size
  int n_kv_head = 0;  // key/value heads (GQA), dividing n_head
  int d_ff = 0;       // MLP hidden size (SwiGLU: of each of gate and up)
  // RoPE: base θ and Llama-3 frequency scaling (Apertus: θ 500,000, factor 8).
  kernels::cpu::RopeParams rope{.theta = 500000.0, .factor = 8.0};
  bool qk_norm = true;  // RMSNorm over each query and key head before RoPE
  MlpActivation activation = MlpActivation::kXielu;
  bool tie_embeddings = false;  // the LM head reuses the input embedding
  float norm_eps = 1e-5f;
  // Document masking: tokens equal to eod_token end a document (positions restart after it,
  // attention does not cross it, and the loss at its position is masked). -1: off.
  int32_t eod_token = -1;

  int head_size() const { return d_model / n_head; }
  // V rounded up to a multiple of 128; embedding and head rows V..Vp-1 are never predicted.
  int padded_vocab() const { return (vocab_size + 127) / 128 * 128; }
  // Empty when the config describes a model; otherwise what is wrong with it.
  std::string Invalid() const;
  bool operator==(const ApertusConfig&) const = default;
};

// Which tensor a TensorView of ApertusLayout holds (the fields of ApertusLayout::Views).
enum class ApertusTensor {
  kEmbed,      // (Vp, C)
  kAttnNorm,   // (L, C)
  kQkv,        // (L, (NH + 2·NKV)·hs, C): query heads, then key heads, then value heads
  kQNorm,      // (L, hs), only with qk_norm
  kKNorm,      // (L, hs), only with qk_norm
  kAttnProj,   // (L, C, NH·hs)
  kMlpNorm,    // (L, C)
  kMlpUp,      // (L, F, C); SwiGLU: (L, 2F, C), gate rows first
  kXieluAp,    // (L), only with xIELU
  kXieluAn,    // (L), only with xIELU
  kMlpDown,    // (L, C, F)
  kFinalNorm,  // (C)
  kLmHead,     // (Vp, C), only when not tied
  kCount
};

// The flat fp32 parameter buffer of one Apertus config: no biases; tensors in ApertusTensor
// order, those the config does not use left out. Layered tensors hold all layers, layer-major.
class ApertusLayout {
 public:
  // Aborts on an invalid config (a programming error; check Invalid() first).
  explicit ApertusLayout(const ApertusConfig& config);

  const ApertusConfig& config() const { return config_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  ApertusTensor kind(size_t index) const { return kinds_[index]; }
  int64_t total() const { return total_; }
  // The parameters a token's forward multiplies with: all but the input embedding (a row
  // lookup) and the LM head's padded rows; a tied head counts its V real rows.
  int64_t NonEmbeddingParameters() const;
  // The tensor of that name; aborts on an unknown name.
  const TensorView& at(std::string_view name) const;

  // Named pointers into a flat buffer; null for tensors the config leaves out.
  template <typename T>
  struct Views {
    T *embed, *attn_norm, *qkv, *q_norm, *k_norm, *attn_proj, *mlp_norm, *mlp_up, *xielu_ap,
        *xielu_an, *mlp_down, *final_norm, *lm_head;
  };
  template <typename T>
  Views<T> Bind(T* flat) const;
  template <typename T>
  static T* Views<T>::*Field(ApertusTensor kind);
  // The named views of per-tensor pointers (tensors() order), as BackwardHook passes them.
  Views<float> ViewsOf(std::span<float* const> pointers) const;

 private:
  ApertusConfig config_;
  std::vector<TensorView> tensors_;
  std::vector<ApertusTensor> kinds_;
  int64_t total_ = 0;
};

// Gradient groups, completed by ApertusModel::Backward in this order (BackwardHook's protocol):
//   0            final norm and the LM head (untied)
//   1 … L        layer L−1 … layer 0: that layer's slice of every layered tensor
//   L + 1        the input embedding (with tied embeddings it also collects the head's
//                gradient, which comes first, so this group is open for the whole pass)
std::vector<std::vector<Segment>> ApertusGradientGroups(const ApertusLayout& layout);

// Initialisation from `seed`: matrices and embeddings N(0, 0.02), output projections into the
// residual stream (attention and MLP down) N(0, 0.02 / sqrt(2·n_layer)), RMSNorm weights 1,
// xIELU α_p = α_n = 0.8, padded vocabulary rows 0. Depends only on the layout and the seed.
void InitApertus(const ApertusLayout& layout, std::span<float> params, uint64_t seed);

// The positions whose loss counts: mask (N, or null for all) and, under document masking, not
// where the input token is the EOD token (its target starts the next document).
void ApertusLossMask(uint8_t* out, const int32_t* inputs, const uint8_t* mask, int64_t n,
                     int32_t eod_token);

// Model FLOPs per token of a training step (forward + backward) at sequence length seq, as
// the Apertus tech report and Megatron-LM count them for MFU: 6 per parameter outside the
// input embedding (the LM head is a matmul, so it counts), plus attention scores and values,
// 2·2·seq·NH·hs per layer forward (GQA shares K/V but every query head still does the work),
// times 3 for the backward: 12·L·seq·NH·hs. Causal masking is not discounted. Norm weights
// and xIELU scalars count too (Megatron-LM's num_floating_point_operations leaves them out:
// 2e-5 relative at 70B).
double ApertusFlopsPerToken(const ApertusLayout& layout, int64_t seq);

// Activations and scratch for one micro-batch shape. Not thread-safe; one per rank. Every
// reduction runs in a fixed order: logits, losses and gradients are bit-identical for any
// OpenMP thread count (at a fixed OpenBLAS thread count; see kernels/matmul.h).
class ApertusModel final : public CpuModel {
 public:
  ApertusModel(const ApertusLayout& layout, int B, int T);

  int B() const override { return B_; }
  int T() const override { return T_; }

  // Runs the model on inputs (B,T) and returns the summed cross-entropy over the positions
  // ApertusLossMask(inputs, mask) counts (mask may be null). Keeps what Backward needs.
  double Forward(const float* params, const int32_t* inputs, const int32_t* targets,
                 const uint8_t* mask) override;

  // Backpropagates loss_scale × (the summed loss of the last Forward), ADDING the gradients.
  void Backward(const float* params, float* grads, float loss_scale) override;
  // The same, telling `hook` about each gradient group (ApertusGradientGroups' order), which
  // may point the gradients elsewhere; `grads` may be null when it points every group
  // elsewhere.
  absl::Status Backward(const float* params, float* grads, float loss_scale,
                        BackwardHook& hook) override;

  // Logits of the last Forward, B×T×Vp; per-position losses (0 where not counted).
  const std::vector<float>& logits() const { return logits_; }
  const std::vector<float>& losses() const { return losses_; }
  // The loss mask of the last Forward, and the document and position ids it used.
  const std::vector<uint8_t>& loss_mask() const { return loss_mask_; }
  const std::vector<int32_t>& positions() const { return pos_; }
  const std::vector<int32_t>& documents() const { return doc_; }

  // Bytes of the activation and scratch buffers this object holds for its B×T shape (every
  // buffer member below counts: a new one belongs in the sum).
  int64_t ActivationBytes() const override;

 private:
  kernels::cpu::GqaShape Shape() const;

  const ApertusLayout& layout_;
  std::vector<std::vector<Segment>> groups_;  // ApertusGradientGroups(layout_)
  int B_, T_;
  const int32_t* inputs_ = nullptr;
  const int32_t* targets_ = nullptr;
  std::vector<uint8_t> loss_mask_;
  std::vector<int32_t> doc_, pos_;

  // Forward activations (L× means per layer, layer-major).
  std::vector<float> resid_;          // (L+1)×(N,C): input of each layer, then the output
  std::vector<float> h1_, rstd1_;     // L×(N,C), L×N: pre-attention RMSNorm
  std::vector<float> qkv_raw_, qkv_;  // L×(N,W): projection; after QK-norm and RoPE
  std::vector<float> qrstd_, krstd_;  // L×(N·NH), L×(N·NKV)
  std::vector<float> atty_, att_;     // L×(N,NH·hs), L×(B,NH,T,T)
  std::vector<float> mid_;            // L×(N,C): residual after attention
  std::vector<float> h2_, rstd2_;     // L×(N,C), L×N: pre-MLP RMSNorm
  std::vector<float> up_, act_;       // L×(N,U), L×(N,F)
  std::vector<float> hf_, rstdf_;     // (N,C), N: final RMSNorm
  std::vector<float> logits_, probs_, losses_;

  // Backward buffers, one layer's worth.
  std::vector<float> dlogits_, dhf_, dres_a_, dres_b_, dmid_, dbranch_, dact_, dup_, dh_, datty_,
      dqkv_, dqkv_raw_;
};

}  // namespace belay::model
