// CPU reference for LayerNorm over the last dimension (kernels/layernorm.h).
#include "kernels/layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace belay::kernels::cpu {
namespace {

constexpr float kEps = 1e-5f;
// Channels per task when dweight/dbias are summed over rows: each channel's sum runs over the
// rows in order inside one task, whatever the thread count.
constexpr int kChannelBlock = 64;

}  // namespace

void LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                      const float* bias, int N, int C) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const float* x = inp + int64_t{i} * C;
    float sum = 0;
    for (int c = 0; c < C; ++c) sum += x[c];
    const float m = sum / static_cast<float>(C);
    float sq = 0;  // two passes: no cancellation when |mean| >> std
    for (int c = 0; c < C; ++c) {
      const float d = x[c] - m;
      sq += d * d;
    }
    const float s = 1.0f / std::sqrt(sq / static_cast<float>(C) + kEps);
    float* o = out + int64_t{i} * C;
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[i] = m;
    rstd[i] = s;
  }
}

void LayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, const float* mean, const float* rstd,
                       int N, int C) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const float* x = inp + int64_t{i} * C;
    const float* g = dout + int64_t{i} * C;
    const float m = mean[i];
    const float s = rstd[i];
    float dnorm_mean = 0;
    float dnorm_norm_mean = 0;
    for (int c = 0; c < C; ++c) {
      const float dnorm = weight[c] * g[c];
      dnorm_mean += dnorm;
      dnorm_norm_mean += dnorm * (x[c] - m) * s;
    }
    dnorm_mean /= static_cast<float>(C);
    dnorm_norm_mean /= static_cast<float>(C);
    float* d = dinp + int64_t{i} * C;
    for (int c = 0; c < C; ++c) {
      const float norm = (x[c] - m) * s;
      d[c] += (weight[c] * g[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
  }
  const int blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kChannelBlock;
    const int c1 = std::min(C, c0 + kChannelBlock);
    for (int i = 0; i < N; ++i) {
      const float* x = inp + int64_t{i} * C;
      const float* g = dout + int64_t{i} * C;
      for (int c = c0; c < c1; ++c) {
        dweight[c] += (x[c] - mean[i]) * rstd[i] * g[c];
        dbias[c] += g[c];
      }
    }
  }
}

}  // namespace belay::kernels::cpu
