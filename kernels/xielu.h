// xIELU, the trainable activation of Apertus' MLP (arXiv 2411.13010; swiss-ai/Megatron-LM
// XIELU), elementwise with two trainable scalars per layer:
//   x > 0:  alpha_p * x^2 + beta * x
//   x <= 0: alpha_n * expm1(min(x, eps)) - alpha_n * x + beta * x
// alpha_p = softplus(a_p), alpha_n = beta + softplus(a_n); beta = 0.5, eps = -1e-6 are fixed.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

inline constexpr float kXieluBeta = 0.5f;
inline constexpr float kXieluEps = -1e-6f;

// The trainable scalars (a_p, a_n) that give alpha_p and alpha_n (> beta): the inverse of the
// softplus maps above. Apertus initialises alpha_p = alpha_n = 0.8.
float XieluRawAlphaP(float alpha_p);
float XieluRawAlphaN(float alpha_n);

void XieluForward(float* out, const float* inp, int64_t n, float a_p, float a_n);

// Accumulates (+=) into dinp (n) and into *da_p and *da_n, the gradients of the raw scalars
// summed over the n elements in fixed blocks, in double, in one order whatever the thread
// count.
void XieluBackward(float* dinp, float* da_p, float* da_n, const float* dout, const float* inp,
                   int64_t n, float a_p, float a_n);

}  // namespace belay::kernels::cpu
