// GPT-2 forward and backward: pre-LayerNorm blocks, learned positions, tied embedding and
// output projection.
#include "worker/model/gpt2.h"

#include <algorithm>

#include "kernels/attention.h"
#include "kernels/encoder.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"
#include "kernels/softmax_xent.h"

namespace belay::model {

namespace k = belay::kernels::cpu;

namespace {
void Zero(std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); }
}  // namespace

Gpt2::Gpt2(const ParameterLayout& layout, int B, int T)
    : layout_(layout), groups_(GradientGroups(layout)), B_(B), T_(T) {
  const Gpt2Config& c = layout.config();
  const size_t L = static_cast<size_t>(c.n_layer), C = static_cast<size_t>(c.d_model);
  const size_t NH = static_cast<size_t>(c.n_head), Vp = static_cast<size_t>(c.padded_vocab);
  const size_t N = static_cast<size_t>(B) * static_cast<size_t>(T);
  const size_t att = static_cast<size_t>(B) * NH * static_cast<size_t>(T) * static_cast<size_t>(T);
  encoded_.resize(N * C);
  ln1_.resize(L * N * C);
  ln1_mean_.resize(L * N);
  ln1_rstd_.resize(L * N);
  qkv_.resize(L * N * 3 * C);
  atty_.resize(L * N * C);
  att_.resize(L * att);
  attproj_.resize(L * N * C);
  residual2_.resize(L * N * C);
  ln2_.resize(L * N * C);
  ln2_mean_.resize(L * N);
  ln2_rstd_.resize(L * N);
  fch_.resize(L * N * 4 * C);
  fch_gelu_.resize(L * N * 4 * C);
  fcproj_.resize(L * N * C);
  residual3_.resize(L * N * C);
  lnf_.resize(N * C);
  lnf_mean_.resize(N);
  lnf_rstd_.resize(N);
  logits_.resize(N * Vp);
  probs_.resize(N * Vp);
  losses_.resize(N);

  dlogits_.resize(N * Vp);
  dlnf_.resize(N * C);
  dres_a_.resize(N * C);
  dres_b_.resize(N * C);
  dresidual2_.resize(N * C);
  dfcproj_.resize(N * C);
  dfch_gelu_.resize(N * 4 * C);
  dfch_.resize(N * 4 * C);
  dln2_.resize(N * C);
  dattproj_.resize(N * C);
  datty_.resize(N * C);
  dqkv_.resize(N * 3 * C);
  dln1_.resize(N * C);
  att_scratch_.resize(att);
}

int64_t Gpt2::ActivationBytes() const {
  size_t n = 0;
  for (const std::vector<float>* v :
       {&encoded_,  &ln1_,      &ln1_mean_,   &ln1_rstd_,  &qkv_,       &atty_,
        &att_,      &attproj_,  &residual2_,  &ln2_,       &ln2_mean_,  &ln2_rstd_,
        &fch_,      &fch_gelu_, &fcproj_,     &residual3_, &lnf_,       &lnf_mean_,
        &lnf_rstd_, &logits_,   &probs_,      &losses_,    &dlogits_,   &dlnf_,
        &dres_a_,   &dres_b_,   &dresidual2_, &dfcproj_,   &dfch_gelu_, &dfch_,
        &dln2_,     &dattproj_, &datty_,      &dqkv_,      &dln1_,      &att_scratch_}) {
    n += v->size();
  }
  return static_cast<int64_t>(n * sizeof(float));
}

double Gpt2::Forward(const float* params, const int32_t* inputs, const int32_t* targets,
                     const uint8_t* mask) {
  const Gpt2Config& c = layout_.config();
  const int C = c.d_model, NH = c.n_head, L = c.n_layer, Vp = c.padded_vocab;
  const int N = B_ * T_;
  const size_t NC = static_cast<size_t>(N) * C;
  const size_t att = static_cast<size_t>(B_) * NH * T_ * T_;
  auto p = layout_.Bind(params);
  inputs_ = inputs;
  targets_ = targets;
  mask_ = mask;

  k::EncoderForward(encoded_.data(), inputs, p.wte, p.wpe, B_, T_, C);
  for (int l = 0; l < L; ++l) {
    const size_t lc = static_cast<size_t>(l);
    const float* residual = l == 0 ? encoded_.data() : residual3_.data() + (lc - 1) * NC;
    float* ln1 = ln1_.data() + lc * NC;
    float* qkv = qkv_.data() + lc * NC * 3;
    float* atty = atty_.data() + lc * NC;
    float* attw = att_.data() + lc * att;
    float* attproj = attproj_.data() + lc * NC;
    float* residual2 = residual2_.data() + lc * NC;
    float* ln2 = ln2_.data() + lc * NC;
    float* fch = fch_.data() + lc * NC * 4;
    float* fch_gelu = fch_gelu_.data() + lc * NC * 4;
    float* fcproj = fcproj_.data() + lc * NC;
    float* residual3 = residual3_.data() + lc * NC;
    const size_t C1 = static_cast<size_t>(C);

    k::LayerNormForward(ln1, ln1_mean_.data() + lc * N, ln1_rstd_.data() + lc * N, residual,
                        p.ln1w + lc * C1, p.ln1b + lc * C1, N, C);
    k::MatmulForward(qkv, ln1, p.qkvw + lc * 3 * C1 * C1, p.qkvb + lc * 3 * C1, N, C, 3 * C);
    k::AttentionForward(atty, attw, qkv, B_, T_, C, NH);
    k::MatmulForward(attproj, atty, p.attprojw + lc * C1 * C1, p.attprojb + lc * C1, N, C, C);
    k::ResidualForward(residual2, residual, attproj, static_cast<int64_t>(NC));
    k::LayerNormForward(ln2, ln2_mean_.data() + lc * N, ln2_rstd_.data() + lc * N, residual2,
                        p.ln2w + lc * C1, p.ln2b + lc * C1, N, C);
    k::MatmulForward(fch, ln2, p.fcw + lc * 4 * C1 * C1, p.fcb + lc * 4 * C1, N, C, 4 * C);
    k::GeluForward(fch_gelu, fch, static_cast<int64_t>(NC) * 4);
    k::MatmulForward(fcproj, fch_gelu, p.fcprojw + lc * 4 * C1 * C1, p.fcprojb + lc * C1, N, 4 * C,
                     C);
    k::ResidualForward(residual3, residual2, fcproj, static_cast<int64_t>(NC));
  }
  const float* last = residual3_.data() + static_cast<size_t>(L - 1) * NC;
  k::LayerNormForward(lnf_.data(), lnf_mean_.data(), lnf_rstd_.data(), last, p.lnfw, p.lnfb, N, C);
  k::MatmulForward(logits_.data(), lnf_.data(), p.wte, nullptr, N, C, Vp);
  k::SoftmaxCrossEntropyForward(losses_.data(), probs_.data(), logits_.data(), targets, mask, N,
                                c.vocab_size, Vp);
  double sum = 0;
  for (int i = 0; i < N; ++i) sum += losses_[static_cast<size_t>(i)];
  return sum;
}

void Gpt2::Backward(const float* params, float* grads, float loss_scale) {
  NoBackwardHook none;
  Backward(params, grads, loss_scale, none).IgnoreError();  // (NoBackwardHook never fails)
}

absl::Status Gpt2::Backward(const float* params, float* grads, float loss_scale,
                            BackwardHook& hook) {
  const Gpt2Config& c = layout_.config();
  const int C = c.d_model, NH = c.n_head, L = c.n_layer, Vp = c.padded_vocab;
  const int N = B_ * T_;
  const size_t NC = static_cast<size_t>(N) * C;
  const size_t att = static_cast<size_t>(B_) * NH * T_ * T_;
  const size_t C1 = static_cast<size_t>(C);
  auto p = layout_.Bind(params);
  const int embed_group = L + 1;
  // Group g's accumulators: its places in `grads`, unless the hook points them elsewhere.
  std::vector<float*> into(layout_.tensors().size());
  auto acquire = [&](int group, ParameterLayout::Views<float>& v) -> absl::Status {
    if (grads != nullptr) {
      PointAtFlat(groups_[static_cast<size_t>(group)], grads, into);
    } else {
      std::fill(into.begin(), into.end(), nullptr);
    }
    if (absl::Status s = hook.Acquire(group, into); !s.ok()) return s;
    v = ParameterLayout::ViewsOf(into);
    return absl::OkStatus();
  };
  ParameterLayout::Views<float> ge{};
  if (absl::Status s = acquire(embed_group, ge); !s.ok()) return s;

  k::SoftmaxCrossEntropyBackward(dlogits_.data(), probs_.data(), targets_, mask_, loss_scale, N,
                                 c.vocab_size, Vp);
  Zero(dlnf_);
  k::MatmulBackward(dlnf_.data(), ge.wte, nullptr, dlogits_.data(), lnf_.data(), p.wte, N, C, Vp);
  float* dcur = dres_a_.data();   // gradient w.r.t. the output of the current block
  float* dnext = dres_b_.data();  // gradient w.r.t. its input
  std::fill(dcur, dcur + NC, 0.0f);
  const float* last = residual3_.data() + static_cast<size_t>(L - 1) * NC;
  ParameterLayout::Views<float> gf{};
  if (absl::Status s = acquire(0, gf); !s.ok()) return s;
  k::LayerNormBackward(dcur, gf.lnfw, gf.lnfb, dlnf_.data(), last, p.lnfw, lnf_mean_.data(),
                       lnf_rstd_.data(), N, C);
  if (absl::Status s = hook.Release(0); !s.ok()) return s;

  for (int l = L - 1; l >= 0; --l) {
    const size_t lc = static_cast<size_t>(l);
    const float* residual = l == 0 ? encoded_.data() : residual3_.data() + (lc - 1) * NC;
    const float* ln1 = ln1_.data() + lc * NC;
    const float* qkv = qkv_.data() + lc * NC * 3;
    const float* atty = atty_.data() + lc * NC;
    const float* attw = att_.data() + lc * att;
    const float* residual2 = residual2_.data() + lc * NC;
    const float* ln2 = ln2_.data() + lc * NC;
    const float* fch = fch_.data() + lc * NC * 4;
    const float* fch_gelu = fch_gelu_.data() + lc * NC * 4;

    for (auto* v : {&dresidual2_, &dfcproj_, &dfch_gelu_, &dfch_, &dln2_, &dattproj_, &datty_,
                    &dqkv_, &dln1_}) {
      Zero(*v);
    }
    std::fill(dnext, dnext + NC, 0.0f);
    const int group = L - l;
    ParameterLayout::Views<float> g{};  // layer l's slices
    if (absl::Status s = acquire(group, g); !s.ok()) return s;

    k::ResidualBackward(dresidual2_.data(), dfcproj_.data(), dcur, static_cast<int64_t>(NC));
    k::MatmulBackward(dfch_gelu_.data(), g.fcprojw, g.fcprojb, dfcproj_.data(), fch_gelu,
                      p.fcprojw + lc * 4 * C1 * C1, N, 4 * C, C);
    k::GeluBackward(dfch_.data(), fch, dfch_gelu_.data(), static_cast<int64_t>(NC) * 4);
    k::MatmulBackward(dln2_.data(), g.fcw, g.fcb, dfch_.data(), ln2, p.fcw + lc * 4 * C1 * C1, N, C,
                      4 * C);
    k::LayerNormBackward(dresidual2_.data(), g.ln2w, g.ln2b, dln2_.data(), residual2,
                         p.ln2w + lc * C1, ln2_mean_.data() + lc * N, ln2_rstd_.data() + lc * N, N,
                         C);
    k::ResidualBackward(dnext, dattproj_.data(), dresidual2_.data(), static_cast<int64_t>(NC));
    k::MatmulBackward(datty_.data(), g.attprojw, g.attprojb, dattproj_.data(), atty,
                      p.attprojw + lc * C1 * C1, N, C, C);
    k::AttentionBackward(dqkv_.data(), att_scratch_.data(), datty_.data(), qkv, attw, B_, T_, C,
                         NH);
    k::MatmulBackward(dln1_.data(), g.qkvw, g.qkvb, dqkv_.data(), ln1, p.qkvw + lc * 3 * C1 * C1, N,
                      C, 3 * C);
    k::LayerNormBackward(dnext, g.ln1w, g.ln1b, dln1_.data(), residual, p.ln1w + lc * C1,
                         ln1_mean_.data() + lc * N, ln1_rstd_.data() + lc * N, N, C);
    if (absl::Status s = hook.Release(group); !s.ok()) return s;
    std::swap(dcur, dnext);
  }
  k::EncoderBackward(ge.wte, ge.wpe, dcur, inputs_, B_, T_, C);
  return hook.Release(embed_group);
}

}  // namespace belay::model
