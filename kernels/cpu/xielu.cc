// CPU reference for the xIELU activation and its scalar gradients (kernels/xielu.h).
#include "kernels/xielu.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace belay::kernels::cpu {
namespace {

// Fixed block size for the scalar-gradient sums: the blocking, and so the rounding, never
// depends on the thread count.
constexpr int64_t kBlock = 4096;

// softplus(a) = log(1 + e^a), in double; above 20 it is a to double precision's needs (the
// threshold torch.nn.functional.softplus uses).
double Softplus(double a) { return a > 20 ? a : std::log1p(std::exp(a)); }
double Sigmoid(double a) { return 1 / (1 + std::exp(-a)); }

struct Alphas {
  float p, n;
};
Alphas AlphasOf(float a_p, float a_n) {
  return {static_cast<float>(Softplus(a_p)), static_cast<float>(kXieluBeta + Softplus(a_n))};
}

}  // namespace

float XieluRawAlphaP(float alpha_p) {
  return static_cast<float>(std::log(std::expm1(static_cast<double>(alpha_p))));
}

float XieluRawAlphaN(float alpha_n) {
  return static_cast<float>(std::log(std::expm1(static_cast<double>(alpha_n) - kXieluBeta)));
}

void XieluForward(float* out, const float* inp, int64_t n, float a_p, float a_n) {
  const Alphas alpha = AlphasOf(a_p, a_n);
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    out[i] = x > 0 ? alpha.p * x * x + kXieluBeta * x
                   : alpha.n * std::expm1(std::min(x, kXieluEps)) - alpha.n * x + kXieluBeta * x;
  }
}

void XieluBackward(float* dinp, float* da_p, float* da_n, const float* dout, const float* inp,
                   int64_t n, float a_p, float a_n) {
  const Alphas alpha = AlphasOf(a_p, a_n);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  // Per block: sum of dout * dy/dalpha_p, then of dout * dy/dalpha_n.
  std::vector<double> partial(2 * static_cast<size_t>(blocks));
#pragma omp parallel for
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t end = std::min(n, (blk + 1) * kBlock);
    double sum_p = 0, sum_n = 0;
    for (int64_t i = blk * kBlock; i < end; ++i) {
      const float x = inp[i];
      const float g = dout[i];
      if (x > 0) {
        dinp[i] += g * (2 * alpha.p * x + kXieluBeta);
        sum_p += static_cast<double>(g) * x * x;
      } else {
        // d/dx expm1(min(x, eps)) is e^x below eps and 0 above it.
        const float dexp = x < kXieluEps ? std::exp(x) : 0.0f;
        dinp[i] += g * (alpha.n * (dexp - 1) + kXieluBeta);
        sum_n += static_cast<double>(g) * (std::expm1(std::min(x, kXieluEps)) - x);
      }
    }
    partial[2 * static_cast<size_t>(blk)] = sum_p;
    partial[2 * static_cast<size_t>(blk) + 1] = sum_n;
  }
  double total_p = 0, total_n = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    total_p += partial[2 * static_cast<size_t>(blk)];
    total_n += partial[2 * static_cast<size_t>(blk) + 1];
  }
  // d alpha_p / d a_p = sigmoid(a_p); likewise for alpha_n.
  *da_p += static_cast<float>(total_p * Sigmoid(a_p));
  *da_n += static_cast<float>(total_n * Sigmoid(a_n));
}

}  // namespace belay::kernels::cpu
