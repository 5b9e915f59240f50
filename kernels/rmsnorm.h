// RMSNorm over the last dimension, with a weight and no bias (as torch.nn.RMSNorm and the
// Llama family): out = inp / sqrt(mean(inp^2) + eps) * weight.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

// out, inp (N,C); weight (C); rstd (N) = 1 / sqrt(mean(inp^2) + eps) is saved for backward.
void RmsNormForward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                    float eps);

// Accumulates (+=) into dinp (N,C) and dweight (C). The sum over rows for dweight runs in row
// order for every channel, so the bits do not depend on the thread count.
void RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const float* rstd, int N, int C);

// The same over H heads of hs values per token, one weight (hs) for all heads, token rows
// `stride` floats apart in inp, out, dinp and dout: QK-norm over the query (or key) heads
// inside a packed qkv row, whose other values are neither read nor written. rstd (N*H), head
// h of token n at n*H + h. With H = 1 and stride = hs these are RmsNormForward/Backward.
void RmsNormHeadsForward(float* out, float* rstd, const float* inp, const float* weight, int N,
                         int H, int hs, int64_t stride, float eps);
void RmsNormHeadsBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                          const float* weight, const float* rstd, int N, int H, int hs,
                          int64_t stride);

}  // namespace belay::kernels::cpu
