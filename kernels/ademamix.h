// AdEMAMix (Pagliardini, Ablin, Grangier 2024, arXiv 2409.03137): Adam with a second, slow
// EMA of the gradient mixed into the numerator; the optimizer Apertus was trained with.
//   m_fast = b1 m_fast + (1 - b1) g;  m_slow = b3(t) m_slow + (1 - b3(t)) g;
//   v = b2 v + (1 - b2) g^2;
//   p -= lr * ((m_fast / (1 - b1^t) + alpha(t) m_slow) / (sqrt(v / (1 - b2^t)) + eps) + wd p)
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

struct AdemamixParams {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float beta3 = 0.9999f;  // the slow EMA's final rate
  float alpha = 8.0f;     // the slow EMA's final weight
  float eps = 1e-8f;
  float weight_decay = 0;  // applied as param -= lr * weight_decay * param (the old param)
  int64_t step = 1;        // 1-based: the update being made
  // Warmup lengths of alpha and beta3 in steps (0: none, the final values from step 1).
  int64_t alpha_warmup = 0;
  int64_t beta3_warmup = 0;
};

// alpha(t): linear from 0 to alpha over alpha_warmup steps, then alpha.
double AdemamixAlpha(const AdemamixParams& p);
// beta3(t): from beta1 to beta3 over beta3_warmup steps, linear in 1 / log(beta) (that is, in
// the EMA's half-life), then beta3: the paper's
//   min(exp(log b1 log b3 / ((1 - t/T) log b3 + (t/T) log b1)), b3).
double AdemamixBeta3(const AdemamixParams& p);

// Updates n parameters in place from their gradients and the three states (updated in
// place). Callers pass weight_decay 0 for the tensors that take none.
void AdemamixUpdate(float* params, const float* grads, float* m_fast, float* m_slow, float* v,
                    int64_t n, const AdemamixParams& p);

}  // namespace belay::kernels::cpu
