// Apertus forward and backward over the CPU kernels (ApertusModel in apertus.h).
#include <algorithm>
#include <cstring>

#include "kernels/gelu.h"
#include "kernels/gqa_attention.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/softmax_xent.h"
#include "kernels/swiglu.h"
#include "kernels/xielu.h"
#include "worker/model/apertus.h"

namespace belay::model {

namespace k = belay::kernels::cpu;

namespace {
void Zero(std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); }
size_t Z(int64_t v) { return static_cast<size_t>(v); }

// The sizes of one micro-batch: ints for the kernels, size_t element counts for offsets.
struct Sizes {
  int C, L, NH, NKV, hs, F, Vp, N, U, W;
  size_t NC, NW, NU, NF, NA, att;  // per layer: N×C, N×W, N×U, N×F, N×NH·hs, B×NH×T×T
};
Sizes SizesOf(const ApertusConfig& c, const k::GqaShape& s) {
  const int N = s.B * s.T, F = c.d_ff;
  const int U = c.activation == MlpActivation::kSwiglu ? 2 * F : F;
  const int W = static_cast<int>(s.QkvWidth());
  return Sizes{c.d_model,
               c.n_layer,
               s.NH,
               s.NKV,
               s.hs,
               F,
               c.padded_vocab(),
               N,
               U,
               W,
               Z(N) * Z(c.d_model),
               Z(N) * Z(W),
               Z(N) * Z(U),
               Z(N) * Z(F),
               Z(N) * Z(s.NH) * Z(s.hs),
               Z(s.B) * Z(s.NH) * Z(s.T) * Z(s.T)};
}
}  // namespace

ApertusModel::ApertusModel(const ApertusLayout& layout, int B, int T)
    : layout_(layout), groups_(ApertusGradientGroups(layout)), B_(B), T_(T) {
  const ApertusConfig& c = layout.config();
  const size_t L = Z(c.n_layer), C = Z(c.d_model), N = Z(int64_t{B} * T);
  const size_t NH = Z(c.n_head), NKV = Z(c.n_kv_head), hs = Z(c.head_size());
  const size_t W = Z(Shape().QkvWidth()), F = Z(c.d_ff), Vp = Z(c.padded_vocab());
  const size_t U = c.activation == MlpActivation::kSwiglu ? 2 * F : F;
  const size_t att = Z(B) * NH * Z(T) * Z(T);
  loss_mask_.resize(N);
  doc_.resize(N);
  pos_.resize(N);
  resid_.resize((L + 1) * N * C);
  h1_.resize(L * N * C);
  rstd1_.resize(L * N);
  qkv_raw_.resize(L * N * W);
  qkv_.resize(L * N * W);
  qrstd_.resize(L * N * NH);
  krstd_.resize(L * N * NKV);
  atty_.resize(L * N * NH * hs);
  att_.resize(L * att);
  mid_.resize(L * N * C);
  h2_.resize(L * N * C);
  rstd2_.resize(L * N);
  up_.resize(L * N * U);
  act_.resize(L * N * F);
  hf_.resize(N * C);
  rstdf_.resize(N);
  logits_.resize(N * Vp);
  probs_.resize(N * Vp);
  losses_.resize(N);

  dlogits_.resize(N * Vp);
  dhf_.resize(N * C);
  dres_a_.resize(N * C);
  dres_b_.resize(N * C);
  dmid_.resize(N * C);
  dbranch_.resize(N * C);
  dact_.resize(N * F);
  dup_.resize(N * U);
  dh_.resize(N * C);
  datty_.resize(N * NH * hs);
  dqkv_.resize(N * W);
  dqkv_raw_.resize(N * W);
}

int64_t ApertusModel::ActivationBytes() const {
  size_t n = 0;
  for (const std::vector<float>* v :
       {&resid_,   &h1_,    &rstd1_,  &qkv_raw_, &qkv_,   &qrstd_,  &krstd_,   &atty_,
        &att_,     &mid_,   &h2_,     &rstd2_,   &up_,    &act_,    &hf_,      &rstdf_,
        &logits_,  &probs_, &losses_, &dlogits_, &dhf_,   &dres_a_, &dres_b_,  &dmid_,
        &dbranch_, &dact_,  &dup_,    &dh_,      &datty_, &dqkv_,   &dqkv_raw_}) {
    n += v->size() * sizeof(float);
  }
  n += loss_mask_.size() * sizeof(uint8_t) + (doc_.size() + pos_.size()) * sizeof(int32_t);
  return static_cast<int64_t>(n);
}

k::GqaShape ApertusModel::Shape() const {
  const ApertusConfig& c = layout_.config();
  return k::GqaShape{.B = B_, .T = T_, .NH = c.n_head, .NKV = c.n_kv_head, .hs = c.head_size()};
}

double ApertusModel::Forward(const float* params, const int32_t* inputs, const int32_t* targets,
                             const uint8_t* mask) {
  const ApertusConfig& c = layout_.config();
  const k::GqaShape shape = Shape();
  const auto [C, L, NH, NKV, hs, F, Vp, N, U, W, NC, NW, NU, NF, NA, att] = SizesOf(c, shape);
  auto p = layout_.Bind(params);
  inputs_ = inputs;
  targets_ = targets;

  const bool documents = c.eod_token >= 0;
  if (documents) {
    k::DocumentIdsAndPositions(doc_.data(), pos_.data(), inputs, B_, T_, c.eod_token);
  } else {
    for (int i = 0; i < N; ++i) pos_[Z(i)] = i % T_;
  }
  ApertusLossMask(loss_mask_.data(), inputs, mask, N, c.eod_token);

  for (int i = 0; i < N; ++i) {
    const float* row = p.embed + Z(inputs[i]) * Z(C);
    std::copy(row, row + C, resid_.data() + Z(i) * Z(C));
  }
  for (int l = 0; l < L; ++l) {
    const size_t lc = Z(l);
    const float* x = resid_.data() + lc * NC;
    float* h1 = h1_.data() + lc * NC;
    float* qkv_raw = qkv_raw_.data() + lc * NW;
    float* qkv = qkv_.data() + lc * NW;
    float* atty = atty_.data() + lc * NA;
    float* mid = mid_.data() + lc * NC;
    float* h2 = h2_.data() + lc * NC;
    float* up = up_.data() + lc * NU;
    float* act = act_.data() + lc * NF;

    k::RmsNormForward(h1, rstd1_.data() + lc * Z(N), x, p.attn_norm + lc * Z(C), N, C, c.norm_eps);
    k::MatmulForward(qkv_raw, h1, p.qkv + lc * Z(W) * Z(C), nullptr, N, C, W);
    std::copy(qkv_raw, qkv_raw + NW, qkv);
    if (c.qk_norm) {
      k::RmsNormHeadsForward(qkv, qrstd_.data() + lc * Z(N) * Z(NH), qkv_raw, p.q_norm + lc * Z(hs),
                             N, NH, hs, W, c.norm_eps);
      k::RmsNormHeadsForward(qkv + Z(NH) * Z(hs), krstd_.data() + lc * Z(N) * Z(NKV),
                             qkv_raw + Z(NH) * Z(hs), p.k_norm + lc * Z(hs), N, NKV, hs, W,
                             c.norm_eps);
    }
    // Query and key heads are adjacent in a row: one rotation covers both.
    k::RopeForward(qkv, qkv, pos_.data(), N, NH + NKV, hs, W, c.rope);
    k::GqaAttentionForward(atty, att_.data() + lc * att, qkv, documents ? doc_.data() : nullptr,
                           shape);
    // dbranch_ (a backward buffer) holds each branch's output until it joins the residual.
    k::MatmulForward(dbranch_.data(), atty, p.attn_proj + lc * Z(C) * Z(NH) * Z(hs), nullptr, N,
                     NH * hs, C);
    k::ResidualForward(mid, x, dbranch_.data(), static_cast<int64_t>(NC));
    k::RmsNormForward(h2, rstd2_.data() + lc * Z(N), mid, p.mlp_norm + lc * Z(C), N, C, c.norm_eps);
    k::MatmulForward(up, h2, p.mlp_up + lc * Z(U) * Z(C), nullptr, N, C, U);
    switch (c.activation) {
      case MlpActivation::kXielu:
        k::XieluForward(act, up, static_cast<int64_t>(NF), p.xielu_ap[l], p.xielu_an[l]);
        break;
      case MlpActivation::kSwiglu:
        k::SwigluForward(act, up, N, F);
        break;
      case MlpActivation::kGelu:
        k::GeluForward(act, up, static_cast<int64_t>(NF));
        break;
    }
    k::MatmulForward(dbranch_.data(), act, p.mlp_down + lc * Z(C) * Z(F), nullptr, N, F, C);
    k::ResidualForward(resid_.data() + (lc + 1) * NC, mid, dbranch_.data(),
                       static_cast<int64_t>(NC));
  }
  const float* head = c.tie_embeddings ? p.embed : p.lm_head;
  k::RmsNormForward(hf_.data(), rstdf_.data(), resid_.data() + Z(L) * NC, p.final_norm, N, C,
                    c.norm_eps);
  k::MatmulForward(logits_.data(), hf_.data(), head, nullptr, N, C, Vp);
  k::SoftmaxCrossEntropyForward(losses_.data(), probs_.data(), logits_.data(), targets,
                                loss_mask_.data(), N, c.vocab_size, Vp);
  double sum = 0;
  for (int i = 0; i < N; ++i) sum += losses_[Z(i)];
  return sum;
}

void ApertusModel::Backward(const float* params, float* grads, float loss_scale) {
  NoBackwardHook none;
  Backward(params, grads, loss_scale, none).IgnoreError();  // (NoBackwardHook never fails)
}

absl::Status ApertusModel::Backward(const float* params, float* grads, float loss_scale,
                                    BackwardHook& hook) {
  const ApertusConfig& c = layout_.config();
  const k::GqaShape shape = Shape();
  const auto [C, L, NH, NKV, hs, F, Vp, N, U, W, NC, NW, NU, NF, NA, att] = SizesOf(c, shape);
  auto p = layout_.Bind(params);
  const int embed_group = L + 1;
  // Group g's accumulators: its places in `grads`, unless the hook points them elsewhere.
  std::vector<float*> into(layout_.tensors().size());
  auto acquire = [&](int group, ApertusLayout::Views<float>& v) -> absl::Status {
    if (grads != nullptr) {
      PointAtFlat(groups_[Z(group)], grads, into);
    } else {
      std::fill(into.begin(), into.end(), nullptr);
    }
    if (absl::Status s = hook.Acquire(group, into); !s.ok()) return s;
    v = layout_.ViewsOf(into);
    return absl::OkStatus();
  };
  ApertusLayout::Views<float> ge{}, gf{}, g{};
  if (absl::Status s = acquire(embed_group, ge); !s.ok()) return s;
  if (absl::Status s = acquire(0, gf); !s.ok()) return s;
  k::SoftmaxCrossEntropyBackward(dlogits_.data(), probs_.data(), targets_, loss_mask_.data(),
                                 loss_scale, N, c.vocab_size, Vp);
  Zero(dhf_);
  k::MatmulBackward(dhf_.data(), c.tie_embeddings ? ge.embed : gf.lm_head, nullptr, dlogits_.data(),
                    hf_.data(), c.tie_embeddings ? p.embed : p.lm_head, N, C, Vp);
  float* dcur = dres_a_.data();   // gradient w.r.t. the output of the current layer
  float* dnext = dres_b_.data();  // gradient w.r.t. its input
  std::fill(dcur, dcur + NC, 0.0f);
  k::RmsNormBackward(dcur, gf.final_norm, dhf_.data(), resid_.data() + Z(L) * NC, p.final_norm,
                     rstdf_.data(), N, C);
  if (absl::Status s = hook.Release(0); !s.ok()) return s;

  for (int l = L - 1; l >= 0; --l) {
    const size_t lc = Z(l);
    const float* x = resid_.data() + lc * NC;
    const float* h1 = h1_.data() + lc * NC;
    const float* qkv_raw = qkv_raw_.data() + lc * NW;
    const float* qkv = qkv_.data() + lc * NW;
    const float* atty = atty_.data() + lc * NA;
    const float* mid = mid_.data() + lc * NC;
    const float* h2 = h2_.data() + lc * NC;
    const float* up = up_.data() + lc * NU;
    const float* act = act_.data() + lc * NF;
    for (auto* v : {&dmid_, &dbranch_, &dact_, &dup_, &dh_, &datty_, &dqkv_, &dqkv_raw_}) Zero(*v);
    std::fill(dnext, dnext + NC, 0.0f);
    const int group = L - l;
    if (absl::Status s = acquire(group, g); !s.ok()) return s;  // layer l's slices

    // MLP branch.
    k::ResidualBackward(dmid_.data(), dbranch_.data(), dcur, static_cast<int64_t>(NC));
    k::MatmulBackward(dact_.data(), g.mlp_down, nullptr, dbranch_.data(), act,
                      p.mlp_down + lc * Z(C) * Z(F), N, F, C);
    switch (c.activation) {
      case MlpActivation::kXielu:
        k::XieluBackward(dup_.data(), g.xielu_ap, g.xielu_an, dact_.data(), up,
                         static_cast<int64_t>(NF), p.xielu_ap[l], p.xielu_an[l]);
        break;
      case MlpActivation::kSwiglu:
        k::SwigluBackward(dup_.data(), dact_.data(), up, N, F);
        break;
      case MlpActivation::kGelu:
        k::GeluBackward(dup_.data(), up, dact_.data(), static_cast<int64_t>(NF));
        break;
    }
    k::MatmulBackward(dh_.data(), g.mlp_up, nullptr, dup_.data(), h2, p.mlp_up + lc * Z(U) * Z(C),
                      N, C, U);
    k::RmsNormBackward(dmid_.data(), g.mlp_norm, dh_.data(), mid, p.mlp_norm + lc * Z(C),
                       rstd2_.data() + lc * Z(N), N, C);

    // Attention branch.
    Zero(dbranch_);
    Zero(dh_);
    k::ResidualBackward(dnext, dbranch_.data(), dmid_.data(), static_cast<int64_t>(NC));
    k::MatmulBackward(datty_.data(), g.attn_proj, nullptr, dbranch_.data(), atty,
                      p.attn_proj + lc * Z(C) * Z(NH) * Z(hs), N, NH * hs, C);
    k::GqaAttentionBackward(dqkv_.data(), datty_.data(), qkv, att_.data() + lc * att, shape);
    k::RopeBackward(dqkv_.data(), dqkv_.data(), pos_.data(), N, NH + NKV, hs, W, c.rope);
    if (c.qk_norm) {
      // Values pass through; query and key heads go back through their norms.
      const size_t v0 = Z(NH + NKV) * Z(hs), vw = Z(NKV) * Z(hs);
      for (size_t i = 0; i < Z(N); ++i) {
        std::memcpy(dqkv_raw_.data() + i * Z(W) + v0, dqkv_.data() + i * Z(W) + v0,
                    vw * sizeof(float));
      }
      k::RmsNormHeadsBackward(dqkv_raw_.data(), g.q_norm, dqkv_.data(), qkv_raw,
                              p.q_norm + lc * Z(hs), qrstd_.data() + lc * Z(N) * Z(NH), N, NH, hs,
                              W);
      const size_t k0 = Z(NH) * Z(hs);
      k::RmsNormHeadsBackward(dqkv_raw_.data() + k0, g.k_norm, dqkv_.data() + k0, qkv_raw + k0,
                              p.k_norm + lc * Z(hs), krstd_.data() + lc * Z(N) * Z(NKV), N, NKV, hs,
                              W);
    } else {
      std::copy(dqkv_.begin(), dqkv_.end(), dqkv_raw_.begin());
    }
    k::MatmulBackward(dh_.data(), g.qkv, nullptr, dqkv_raw_.data(), h1, p.qkv + lc * Z(W) * Z(C), N,
                      C, W);
    k::RmsNormBackward(dnext, g.attn_norm, dh_.data(), x, p.attn_norm + lc * Z(C),
                       rstd1_.data() + lc * Z(N), N, C);
    if (absl::Status s = hook.Release(group); !s.ok()) return s;
    std::swap(dcur, dnext);
  }
  // Embedding rows: each token's row gets its positions' gradients in position order.
  for (int i = 0; i < N; ++i) {
    float* row = ge.embed + Z(inputs_[i]) * Z(C);
    const float* d = dcur + Z(i) * Z(C);
    for (int j = 0; j < C; ++j) row[j] += d[j];
  }
  return hook.Release(embed_group);
}

}  // namespace belay::model
