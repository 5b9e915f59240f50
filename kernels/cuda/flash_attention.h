// Fused causal attention on the GPU in the FlashAttention-2 manner: scores and probabilities
// stay in registers tile by tile and are never written out; backward recomputes them from
// the saved log-sum-exp. bf16 tensor-core products (mma.sync), fp32 softmax, no atomics
// (dK/dV and dQ are separate kernels), so results repeat bit for bit. Same contract as
// kernels/cuda/attention.h otherwise; tensors must be 16-byte aligned.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// Whether the fused kernels take this shape: head size 64 and T a multiple of 64.
bool FlashAttentionSupports(int T, int C, int NH);

// qkv (B,T,3C) as in AttentionForward; out (B,T,C); lse (B,NH,T) fp32 gets each row's
// log-sum-exp of the scaled scores, for backward.
absl::Status FlashAttentionForward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C,
                                   int NH, cudaStream_t stream);

// Floats of scratch FlashAttentionBackward needs.
size_t FlashAttentionBackwardScratch(int B, int T, int NH);

// dqkv (B,T,3C) is OVERWRITTEN. out and lse are the forward's.
absl::Status FlashAttentionBackward(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                                    const bf16* out, const float* lse, int B, int T, int C, int NH,
                                    cudaStream_t stream);

}  // namespace belay::kernels::cuda
