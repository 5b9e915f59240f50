// CPU reference for the AdamW update (kernels/adamw.h).
#include "kernels/adamw.h"

#include <cmath>

namespace belay::kernels::cpu {

void AdamWUpdate(float* params, const float* grads, float* m, float* v, int64_t n,
                 const AdamWParams& p) {
  // Bias corrections in double, then rounded once, as torch computes them from Python floats.
  const auto bc1 =
      static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step)));
  const auto bc2 =
      static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step)));
  const float decay = p.lr * p.weight_decay;
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i];
    float w = params[i] - decay * params[i];
    const float mi = p.beta1 * m[i] + (1.0f - p.beta1) * g;
    const float vi = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
    const float mhat = mi / bc1;
    const float vhat = vi / bc2;
    w -= p.lr * mhat / (std::sqrt(vhat) + p.eps);
    m[i] = mi;
    v[i] = vi;
    params[i] = w;
  }
}

}  // namespace belay::kernels::cpu
