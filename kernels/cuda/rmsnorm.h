// RMSNorm on the GPU (reference: kernels/rmsnorm.h): bf16 activations and weight, fp32
// statistics and weight gradient; the backward without atomics.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// out, inp (N,C); weight (C); rstd (N) fp32 = 1 / sqrt(mean(inp^2) + eps), saved for backward.
absl::Status RmsNormForward(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N,
                            int C, float eps, cudaStream_t stream);

// The same over H heads of hs values per token, one weight (hs) for all heads, token rows
// `stride` elements apart in inp and out (QK-norm inside a packed qkv row; the other values
// are neither read nor written). rstd (N*H), head h of token n at n*H + h.
absl::Status RmsNormHeadsForward(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N,
                                 int H, int hs, int64_t stride, float eps, cudaStream_t stream);

// Floats of scratch the backward needs for `rows` normalised rows (N, or N*H for the heads
// variant) of C (or hs) values.
size_t RmsNormBackwardScratch(int64_t rows, int C);

// Accumulates (+=) into dinp (bf16, laid out as inp) and dweight (fp32). dweight is summed
// over rows in a fixed order through `scratch`: repeatable bit for bit.
absl::Status RmsNormBackward(bf16* dinp, float* dweight, float* scratch, const bf16* dout,
                             const bf16* inp, const bf16* weight, const float* rstd, int N, int C,
                             cudaStream_t stream);
absl::Status RmsNormHeadsBackward(bf16* dinp, float* dweight, float* scratch, const bf16* dout,
                                  const bf16* inp, const bf16* weight, const float* rstd, int N,
                                  int H, int hs, int64_t stride, cudaStream_t stream);

}  // namespace belay::kernels::cuda
