// Residual connection: out = a + b, elementwise.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

void ResidualForward(float* out, const float* a, const float* b, int64_t n);

// Accumulates (+=) dout into both da and db.
void ResidualBackward(float* da, float* db, const float* dout, int64_t n);

}  // namespace belay::kernels::cpu
