// Global gradient norm without atomics, and clipping, on the GPU (reference:
// kernels/grad_norm.h).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// Doubles of device scratch SumOfSquares needs (independent of n).
size_t SumOfSquaresScratch();

// Writes the sum of squares of g[0..n) to *out (device memory, one double). Partial sums in
// double over a fixed grid, then one block sums them in a fixed order: bit-identical run to
// run on any device.
absl::Status SumOfSquares(double* out, double* scratch, const float* g, int64_t n,
                          cudaStream_t stream);

// Multiplies g[0..n) by s.
absl::Status Scale(float* g, int64_t n, float s, cudaStream_t stream);

// dst[i] += src[i] for i < n (fp32, one rounding each: what a host loop gives). dst and src
// are the same buffer or do not overlap.
absl::Status Accumulate(float* dst, const float* src, int64_t n, cudaStream_t stream);

}  // namespace belay::kernels::cuda
