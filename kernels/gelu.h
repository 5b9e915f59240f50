// GELU, tanh approximation (torch.nn.GELU(approximate="tanh")), elementwise.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

void GeluForward(float* out, const float* inp, int64_t n);

// Accumulates (+=) into dinp.
void GeluBackward(float* dinp, const float* inp, const float* dout, int64_t n);

}  // namespace belay::kernels::cpu
