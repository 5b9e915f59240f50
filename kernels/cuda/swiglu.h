// SwiGLU on the GPU (reference: kernels/swiglu.h): out = silu(gate) * up over bf16 values, the
// gate in the first half of each input row and up in the second.
#pragma once

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// out (N,F); inp (N,2F).
absl::Status SwigluForward(bf16* out, const bf16* inp, int N, int F, cudaStream_t stream);

// Accumulates (+=) into dinp (N,2F): the gate's gradient in the first half of each row, up's
// in the second; each element computed in fp32 and rounded once.
absl::Status SwigluBackward(bf16* dinp, const bf16* dout, const bf16* inp, int N, int F,
                            cudaStream_t stream);

}  // namespace belay::kernels::cuda
