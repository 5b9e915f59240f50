// CPU reference for SwiGLU (kernels/swiglu.h).
#include "kernels/swiglu.h"

#include <cmath>
#include <cstdint>

namespace belay::kernels::cpu {

void SwigluForward(float* out, const float* inp, int N, int F) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const float* gate = inp + int64_t{i} * 2 * F;
    const float* up = gate + F;
    float* o = out + int64_t{i} * F;
    for (int j = 0; j < F; ++j) o[j] = gate[j] / (1.0f + std::exp(-gate[j])) * up[j];
  }
}

void SwigluBackward(float* dinp, const float* dout, const float* inp, int N, int F) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const float* gate = inp + int64_t{i} * 2 * F;
    const float* up = gate + F;
    const float* g = dout + int64_t{i} * F;
    float* dgate = dinp + int64_t{i} * 2 * F;
    float* dup = dgate + F;
    for (int j = 0; j < F; ++j) {
      const float sig = 1.0f / (1.0f + std::exp(-gate[j]));
      // silu'(x) = sigmoid(x) * (1 + x * (1 - sigmoid(x))).
      dgate[j] += g[j] * up[j] * sig * (1.0f + gate[j] * (1.0f - sig));
      dup[j] += g[j] * gate[j] * sig;
    }
  }
}

}  // namespace belay::kernels::cpu
