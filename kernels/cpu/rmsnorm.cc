// CPU reference for RMSNorm over the last dimension (kernels/rmsnorm.h).
#include "kernels/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace belay::kernels::cpu {
namespace {

// Channels per task when dweight is summed over rows: each channel's sum runs over the rows in
// order inside one task, whatever the thread count.
constexpr int kChannelBlock = 64;

}  // namespace

void RmsNormForward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                    float eps) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const float* x = inp + int64_t{i} * C;
    float sq = 0;
    for (int c = 0; c < C; ++c) sq += x[c] * x[c];
    const float s = 1.0f / std::sqrt(sq / static_cast<float>(C) + eps);
    float* o = out + int64_t{i} * C;
    for (int c = 0; c < C; ++c) o[c] = x[c] * s * weight[c];
    rstd[i] = s;
  }
}

void RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const float* rstd, int N, int C) {
  // With xhat = x * s: dx = s * (w * g - xhat * mean(w * g * xhat)); ds/dx_c = -s^3 x_c / C.
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const float* x = inp + int64_t{i} * C;
    const float* g = dout + int64_t{i} * C;
    const float s = rstd[i];
    float dot = 0;
    for (int c = 0; c < C; ++c) dot += weight[c] * g[c] * x[c] * s;
    const float mean_dot = dot / static_cast<float>(C);
    float* d = dinp + int64_t{i} * C;
    for (int c = 0; c < C; ++c) d[c] += (weight[c] * g[c] - x[c] * s * mean_dot) * s;
  }
  const int blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kChannelBlock;
    const int c1 = std::min(C, c0 + kChannelBlock);
    for (int i = 0; i < N; ++i) {
      const float* x = inp + int64_t{i} * C;
      const float* g = dout + int64_t{i} * C;
      for (int c = c0; c < c1; ++c) dweight[c] += x[c] * rstd[i] * g[c];
    }
  }
}

}  // namespace belay::kernels::cpu
