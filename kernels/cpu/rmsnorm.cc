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

void RmsNormHeadsForward(float* out, float* rstd, const float* inp, const float* weight, int N,
                         int H, int hs, int64_t stride, float eps) {
  const int64_t rows = int64_t{N} * H;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t offset = r / H * stride + r % H * hs;
    const float* x = inp + offset;
    float sq = 0;
    for (int c = 0; c < hs; ++c) sq += x[c] * x[c];
    const float s = 1.0f / std::sqrt(sq / static_cast<float>(hs) + eps);
    float* o = out + offset;
    for (int c = 0; c < hs; ++c) o[c] = x[c] * s * weight[c];
    rstd[r] = s;
  }
}

void RmsNormHeadsBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                          const float* weight, const float* rstd, int N, int H, int hs,
                          int64_t stride) {
  const int64_t rows = int64_t{N} * H;
  // With xhat = x * s: dx = s * (w * g - xhat * mean(w * g * xhat)); ds/dx_c = -s^3 x_c / C.
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t offset = r / H * stride + r % H * hs;
    const float* x = inp + offset;
    const float* g = dout + offset;
    const float s = rstd[r];
    float dot = 0;
    for (int c = 0; c < hs; ++c) dot += weight[c] * g[c] * x[c] * s;
    const float mean_dot = dot / static_cast<float>(hs);
    float* d = dinp + offset;
    for (int c = 0; c < hs; ++c) d[c] += (weight[c] * g[c] - x[c] * s * mean_dot) * s;
  }
  const int blocks = (hs + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kChannelBlock;
    const int c1 = std::min(hs, c0 + kChannelBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t offset = r / H * stride + r % H * hs;
      const float* x = inp + offset;
      const float* g = dout + offset;
      for (int c = c0; c < c1; ++c) dweight[c] += x[c] * rstd[r] * g[c];
    }
  }
}

void RmsNormForward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                    float eps) {
  RmsNormHeadsForward(out, rstd, inp, weight, N, 1, C, C, eps);
}

void RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const float* rstd, int N, int C) {
  RmsNormHeadsBackward(dinp, dweight, dout, inp, weight, rstd, N, 1, C, C);
}

}  // namespace belay::kernels::cpu
