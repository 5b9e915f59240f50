// RMSNorm over the last dimension, with a weight and no bias (as torch.nn.RMSNorm and the
// Llama family): out = inp / sqrt(mean(inp^2) + eps) * weight.
#pragma once

namespace belay::kernels::cpu {

// out, inp (N,C); weight (C); rstd (N) = 1 / sqrt(mean(inp^2) + eps) is saved for backward.
void RmsNormForward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                    float eps);

// Accumulates (+=) into dinp (N,C) and dweight (C). The sum over rows for dweight runs in row
// order for every channel, so the bits do not depend on the thread count.
void RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const float* rstd, int N, int C);

}  // namespace belay::kernels::cpu
