// Causal grouped-query attention with a document mask on the GPU (reference:
// kernels/gqa_attention.h, whose GqaShape it takes), fused in the FlashAttention manner: scores
// are computed tile by tile with an online softmax and never stored; backward recomputes them
// from the saved log-sum-exp. bf16 tensors, fp32 arithmetic, no atomics (dQ and dK/dV are
// separate kernels), so two runs give the same bits. Key/value head h / (NH / NKV) is read in
// place by each query head of its group.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"
#include "kernels/gqa_attention.h"

namespace belay::kernels::cuda {

// The largest head size the kernels take (any hs from 1 up to it).
inline constexpr int kGqaMaxHeadSize = 128;

// qkv (B,T,QkvWidth) as in the reference; doc (B,T) device int32 document ids, or nullptr for
// plain causal attention; out (B,T,NH*hs); lse (B,NH,T) fp32 gets each query row's
// log-sum-exp of its scaled visible scores, for backward.
absl::Status GqaAttentionForward(bf16* out, float* lse, const bf16* qkv, const int32_t* doc,
                                 const cpu::GqaShape& s, cudaStream_t stream);

// Floats of scratch GqaAttentionBackward needs.
size_t GqaAttentionBackwardScratch(const cpu::GqaShape& s);

// dqkv (B,T,QkvWidth) is OVERWRITTEN (every element: dQ, dK, dV). out and lse are the
// forward's, doc the forward's mask.
absl::Status GqaAttentionBackward(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                                  const bf16* out, const float* lse, const int32_t* doc,
                                  const cpu::GqaShape& s, cudaStream_t stream);

}  // namespace belay::kernels::cuda
