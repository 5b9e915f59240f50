// CPU reference for the AdEMAMix update and its alpha/beta3 schedulers (kernels/ademamix.h).
#include "kernels/ademamix.h"

#include <algorithm>
#include <cmath>

namespace belay::kernels::cpu {

double AdemamixAlpha(const AdemamixParams& p) {
  if (p.step >= p.alpha_warmup) return p.alpha;
  return static_cast<double>(p.step) / static_cast<double>(p.alpha_warmup) * p.alpha;
}

double AdemamixBeta3(const AdemamixParams& p) {
  if (p.step >= p.beta3_warmup) return p.beta3;
  const double a = static_cast<double>(p.step) / static_cast<double>(p.beta3_warmup);
  const double log_start = std::log(static_cast<double>(p.beta1));
  const double log_end = std::log(static_cast<double>(p.beta3));
  // The reference implementations add 1e-8 to beta inside the log (a half-life form of the
  // same schedule); that moves beta3(t) by ~1e-8, below fp32 resolution near 1.
  const double beta = std::exp(log_start * log_end / ((1 - a) * log_end + a * log_start));
  return std::min(beta, static_cast<double>(p.beta3));
}

void AdemamixUpdate(float* params, const float* grads, float* m_fast, float* m_slow, float* v,
                    int64_t n, const AdemamixParams& p) {
  // Schedules and bias corrections in double, then rounded once.
  const auto bc1 =
      static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step)));
  const auto bc2 =
      static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step)));
  const auto alpha = static_cast<float>(AdemamixAlpha(p));
  const double beta3_t = AdemamixBeta3(p);
  const auto beta3 = static_cast<float>(beta3_t);
  // 1 - beta3 from the double: near 1, 1.0f - beta3 would keep only beta3's fp32 rounding.
  const auto one_minus_beta3 = static_cast<float>(1.0 - beta3_t);
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i];
    const float mf = p.beta1 * m_fast[i] + (1.0f - p.beta1) * g;
    const float ms = beta3 * m_slow[i] + one_minus_beta3 * g;
    const float vi = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
    const float update =
        (mf / bc1 + alpha * ms) / (std::sqrt(vi / bc2) + p.eps) + p.weight_decay * params[i];
    params[i] -= p.lr * update;
    m_fast[i] = mf;
    m_slow[i] = ms;
    v[i] = vi;
  }
}

}  // namespace belay::kernels::cpu
