// Global gradient norm and clipping.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

// Sum of squares of g[0..n), accumulated in double in a fixed order (bit-identical for any
// thread count), so that per-shard results can be summed across ranks.
double SumOfSquares(const float* g, int64_t n);

// Multiplies g[0..n) by s.
void Scale(float* g, int64_t n, float s);

// The factor torch.nn.utils.clip_grad_norm_ applies: min(1, max_norm / (norm + 1e-6));
// 1 when max_norm <= 0 (clipping off). A NaN norm gives NaN, as in torch, so a non-finite
// gradient is not silently passed through.
float ClipFactor(double norm, double max_norm);

}  // namespace belay::kernels::cpu
