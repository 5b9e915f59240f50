// SwiGLU, the gated activation of the Llama MLP: out = silu(gate) * up with silu(x) =
// x * sigmoid(x). The input is one (N, 2F) matmul output whose first half of each row is the
// gate and the second half up (the torch.chunk order of Megatron-LM's swiglu).
#pragma once

namespace belay::kernels::cpu {

// out (N,F); inp (N,2F).
void SwigluForward(float* out, const float* inp, int N, int F);

// Accumulates (+=) into dinp (N,2F): the gate's gradient in the first half of each row, up's in
// the second.
void SwigluBackward(float* dinp, const float* dout, const float* inp, int N, int F);

}  // namespace belay::kernels::cpu
