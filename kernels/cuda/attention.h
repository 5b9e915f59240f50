// Causal multi-head self-attention on the GPU (reference: kernels/attention.h). This first
// version materialises the attention matrix: q·kᵀ and att·v are batched cuBLASLt products,
// with a causal softmax kernel between them (a fused flash-style kernel is the next step).
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// bf16 elements of scratch each pass needs.
size_t AttentionForwardScratch(int B, int T, int C, int NH);
size_t AttentionBackwardScratch(int B, int T, int C, int NH);

// qkv (B,T,3C) holds q, k, v one after the other, each NH heads of C/NH. out (B,T,C);
// att (B,NH,T,T) is written with the softmax weights (0 above the diagonal) for backward.
absl::Status AttentionForward(Blas& blas, bf16* out, bf16* att, bf16* scratch, const bf16* qkv,
                              int B, int T, int C, int NH, cudaStream_t stream);

// dqkv (B,T,3C) is OVERWRITTEN with the gradient of q, k and v.
absl::Status AttentionBackward(Blas& blas, bf16* dqkv, bf16* scratch, const bf16* dout,
                               const bf16* qkv, const bf16* att, int B, int T, int C, int NH,
                               cudaStream_t stream);

}  // namespace belay::kernels::cuda
