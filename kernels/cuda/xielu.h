// xIELU on the GPU (reference: kernels/xielu.h): bf16 activations, the two trainable scalars
// a_p, a_n and their gradients fp32 in device memory (so a step never waits for the host).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// out, inp (n). a_p, a_n point to one float each (device): the raw scalars, turned into
// alpha_p = softplus(a_p), alpha_n = beta + softplus(a_n) in double as the reference does.
absl::Status XieluForward(bf16* out, const bf16* inp, int64_t n, const float* a_p, const float* a_n,
                          cudaStream_t stream);

// Doubles of scratch XieluBackward needs for n elements.
size_t XieluBackwardScratch(int64_t n);

// Accumulates (+=) into dinp (n, bf16) and into *da_p, *da_n (device fp32): the scalars'
// gradients are summed in double over fixed blocks of elements, then the blocks' sums in block
// order in a second kernel (no atomics), so two runs give the same bits.
absl::Status XieluBackward(bf16* dinp, float* da_p, float* da_n, double* scratch, const bf16* dout,
                           const bf16* inp, int64_t n, const float* a_p, const float* a_n,
                           cudaStream_t stream);

}  // namespace belay::kernels::cuda
