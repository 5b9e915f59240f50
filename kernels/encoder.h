// Token + position embedding: out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:].
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

// out (B,T,C); tokens (B,T), each < the rows of wte; wte (Vp,C); wpe (>=T,C).
void EncoderForward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                    int T, int C);

// Accumulates (+=) into dwte and dwpe. Deterministic: every output row is summed in a fixed
// order whatever the thread count (no atomics).
void EncoderBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                     int T, int C);

}  // namespace belay::kernels::cpu
