// CPU reference for causal multi-head self-attention (kernels/attention.h).
#include "kernels/attention.h"

#include <cmath>
#include <cstdint>

namespace belay::kernels::cpu {

void AttentionForward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int64_t C3 = int64_t{3} * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t rows = int64_t{B} * NH * T;  // one (b, h, t) query row per iteration
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int t = static_cast<int>(r % T);
    const int h = static_cast<int>((r / T) % NH);
    const int64_t b = r / (int64_t{NH} * T);
    const float* base = qkv + b * T * C3;
    const float* q = base + t * C3 + int64_t{h} * hs;
    float* a = att + r * T;

    float maxv = -INFINITY;
    for (int t2 = 0; t2 <= t; ++t2) {
      const float* k = base + t2 * C3 + C + int64_t{h} * hs;
      float dot = 0;
      for (int i = 0; i < hs; ++i) dot += q[i] * k[i];
      a[t2] = dot * scale;
      if (a[t2] > maxv) maxv = a[t2];
    }
    float sum = 0;
    for (int t2 = 0; t2 <= t; ++t2) {
      a[t2] = std::exp(a[t2] - maxv);
      sum += a[t2];
    }
    const float inv = 1.0f / sum;
    for (int t2 = 0; t2 <= t; ++t2) a[t2] *= inv;
    for (int t2 = t + 1; t2 < T; ++t2) a[t2] = 0;

    float* o = out + (b * T + t) * C + int64_t{h} * hs;
    for (int i = 0; i < hs; ++i) o[i] = 0;
    for (int t2 = 0; t2 <= t; ++t2) {
      const float* v = base + t2 * C3 + 2 * int64_t{C} + int64_t{h} * hs;
      for (int i = 0; i < hs; ++i) o[i] += a[t2] * v[i];
    }
  }
}

void AttentionBackward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                       const float* att, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const int64_t C3 = int64_t{3} * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // One (b, h) per task: dk and dv rows collect contributions from every later query row, so
  // the whole head stays in one task and visits query rows in order (no atomics, and the same
  // bits for any thread count).
  const int64_t heads = int64_t{B} * NH;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < heads; ++bh) {
    const int64_t b = bh / NH;
    const int64_t hoff = (bh % NH) * hs;
    const float* base = qkv + b * T * C3;
    float* dbase = dqkv + b * T * C3;
    for (int t = 0; t < T; ++t) {
      const float* a = att + (bh * T + t) * T;
      float* datt = scratch + (bh * T + t) * T;  // dLoss/d att[t, :], then d preatt[t, :]
      const float* g = dout + (b * T + t) * C + hoff;
      for (int t2 = 0; t2 <= t; ++t2) {
        const float* v = base + t2 * C3 + 2 * int64_t{C} + hoff;
        float* dv = dbase + t2 * C3 + 2 * int64_t{C} + hoff;
        float dot = 0;
        for (int i = 0; i < hs; ++i) {
          dot += g[i] * v[i];
          dv[i] += a[t2] * g[i];
        }
        datt[t2] = dot;
      }
      // Softmax backward: dpre = a * (datt - sum(a * datt)).
      float adot = 0;
      for (int t2 = 0; t2 <= t; ++t2) adot += a[t2] * datt[t2];
      for (int t2 = 0; t2 <= t; ++t2) datt[t2] = a[t2] * (datt[t2] - adot) * scale;
      const float* q = base + t * C3 + hoff;
      float* dq = dbase + t * C3 + hoff;
      for (int t2 = 0; t2 <= t; ++t2) {
        const float* k = base + t2 * C3 + C + hoff;
        float* dk = dbase + t2 * C3 + C + hoff;
        for (int i = 0; i < hs; ++i) {
          dq[i] += datt[t2] * k[i];
          dk[i] += datt[t2] * q[i];
        }
      }
    }
  }
}

}  // namespace belay::kernels::cpu
