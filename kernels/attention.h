// Causal multi-head self-attention over packed q, k, v (scale 1/sqrt(head size)).
#pragma once

namespace belay::kernels::cpu {

// qkv (B,T,3C) holds q, k, v one after the other along the last dimension, each split into
// NH heads of C/NH. out (B,T,C); att (B,NH,T,T) keeps the softmax weights for backward
// (entries above the diagonal are 0).
void AttentionForward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);

// Accumulates (+=) into dqkv (B,T,3C). scratch needs B*NH*T*T floats; its contents on entry
// do not matter.
void AttentionBackward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                       const float* att, int B, int T, int C, int NH);

}  // namespace belay::kernels::cpu
