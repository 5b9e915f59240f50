// AdamW on the GPU over fp32 master weights, writing the bf16 working copy (reference:
// kernels/adamw.h, whose AdamWParams it takes).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/adamw.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// Updates master[0..n) in place from grads with moments m, v (fp32, in place), the same
// arithmetic as the CPU reference; writes params[i] = bf16(master[i]) when params is non-null.
absl::Status AdamWUpdate(float* master, bf16* params, const float* grads, float* m, float* v,
                         int64_t n, const cpu::AdamWParams& p, cudaStream_t stream);

// dst[i] = bf16(src[i]) for i < n, rounded as AdamWUpdate rounds the working copy (so a rank
// that converts another rank's updated master weights gets that rank's bf16 bits).
absl::Status ConvertToBf16(const float* src, bf16* dst, int64_t n, cudaStream_t stream);

}  // namespace belay::kernels::cuda
