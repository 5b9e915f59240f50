// CPU reference for the fused softmax + cross-entropy over a padded vocabulary
// (kernels/softmax_xent.h).
#include "kernels/softmax_xent.h"

#include <cmath>
#include <cstdint>

namespace belay::kernels::cpu {

void SoftmaxCrossEntropyForward(float* losses, float* probs, const float* logits,
                                const int32_t* targets, const uint8_t* mask, int N, int V, int Vp) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    const float* z = logits + int64_t{i} * Vp;
    float* p = probs + int64_t{i} * Vp;
    float maxv = -INFINITY;
    for (int j = 0; j < V; ++j) maxv = z[j] > maxv ? z[j] : maxv;
    float sum = 0;
    for (int j = 0; j < V; ++j) {
      p[j] = std::exp(z[j] - maxv);
      sum += p[j];
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < V; ++j) p[j] *= inv;
    for (int j = V; j < Vp; ++j) p[j] = 0;
    // log-sum-exp rather than -log(p[target]): finite even where p[target] underflows to 0.
    // The target of an excluded position is never read.
    losses[i] = mask[i] != 0 ? std::log(sum) - (z[targets[i]] - maxv) : 0.0f;
  }
}

void SoftmaxCrossEntropyBackward(float* dlogits, const float* probs, const int32_t* targets,
                                 const uint8_t* mask, float scale, int N, int V, int Vp) {
#pragma omp parallel for
  for (int i = 0; i < N; ++i) {
    float* d = dlogits + int64_t{i} * Vp;
    if (mask[i] == 0) {
      for (int j = 0; j < Vp; ++j) d[j] = 0;
      continue;
    }
    const float* p = probs + int64_t{i} * Vp;
    for (int j = 0; j < V; ++j) d[j] = scale * p[j];
    d[targets[i]] = scale * (p[targets[i]] - 1.0f);
    for (int j = V; j < Vp; ++j) d[j] = 0;
  }
}

}  // namespace belay::kernels::cpu
