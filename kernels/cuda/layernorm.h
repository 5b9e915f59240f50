// LayerNorm on the GPU, fused with the residual add before it (reference: kernels/layernorm.h
// and kernels/residual.h). eps 1e-5, biased variance.
#pragma once

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// With b non-null: residual (N,C) = a + b rounded to bf16, and out = LayerNorm(residual).
// With b null: out = LayerNorm(a), residual is not written (may be null).
// mean, rstd (N) fp32 are saved for backward; statistics are computed in fp32.
absl::Status ResidualLayerNormForward(bf16* residual, bf16* out, float* mean, float* rstd,
                                      const bf16* a, const bf16* b, const bf16* weight,
                                      const bf16* bias, int N, int C, cudaStream_t stream);

// Floats of scratch LayerNormBackward needs for N rows of C.
size_t LayerNormBackwardScratch(int N, int C);

// Accumulates (+=) into dinp (N,C) bf16 (the residual stream's gradient) and into dweight,
// dbias (C) fp32. inp is the LayerNorm's input (the residual). The weight and bias gradients
// are summed over rows in a fixed order through `scratch` (no atomics): repeatable bit for bit.
absl::Status LayerNormBackward(bf16* dinp, float* dweight, float* dbias, float* scratch,
                               const bf16* dout, const bf16* inp, const bf16* weight,
                               const float* mean, const float* rstd, int N, int C,
                               cudaStream_t stream);

}  // namespace belay::kernels::cuda
