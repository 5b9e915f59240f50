// AdamW (decoupled weight decay, bias-corrected moments), as torch.optim.AdamW.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

struct AdamWParams {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0;  // applied as param -= lr * weight_decay * param
  int64_t step = 1;        // 1-based: the update being made, for bias correction
};

// Updates n parameters in place from their gradients, with first and second moments m and
// v (updated in place). Callers pass weight_decay 0 for biases and LayerNorm parameters.
void AdamWUpdate(float* params, const float* grads, float* m, float* v, int64_t n,
                 const AdamWParams& p);

}  // namespace belay::kernels::cpu
