// LayerNorm over the last dimension (eps 1e-5, biased variance, as torch.nn.LayerNorm).
#pragma once

namespace belay::kernels::cpu {

// out, inp (N,C); weight, bias (C); mean, rstd (N) are saved for the backward pass.
void LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                      const float* bias, int N, int C);

// Accumulates (+=) into dinp, dweight and dbias.
void LayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, const float* mean, const float* rstd,
                       int N, int C);

}  // namespace belay::kernels::cpu
