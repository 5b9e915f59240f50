// Rotary position embedding on the GPU with Llama-3 frequency scaling and explicit position
// ids (reference: kernels/rope.h, whose RopeParams it takes). bf16 values, fp32 frequencies.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cpu {
struct RopeParams;  // kernels/rope.h, which nvcc's C++17 does not compile (a defaulted ==)
}  // namespace belay::kernels::cpu

namespace belay::kernels::cuda {

// Computes the hs/2 inverse frequencies on the host exactly as the CPU reference does
// (cpu::RopeInverseFrequencies, in double, rounded once) and copies them to inv_freq (device,
// hs/2 floats); returns once the copy is done (defined in rope_frequencies.cc). Done once per
// model: both paths then rotate by the same floats.
absl::Status RopeUploadInverseFrequencies(float* inv_freq, int hs, const cpu::RopeParams& p,
                                          cudaStream_t stream);

// Rotates H heads of hs values (hs even) for each of N tokens, token n's heads starting at
// inp + n * stride (stride >= H * hs: q and k inside a packed qkv row), by the angle
// pos[n] * inv_freq[i] (computed in double, as the reference does). pos (N) device int32.
// out may equal inp.
absl::Status RopeForward(bf16* out, const bf16* inp, const int32_t* pos, const float* inv_freq,
                         int N, int H, int hs, int64_t stride, cudaStream_t stream);

// The transpose rotation: writes (=, not +=) dinp from dout; dinp may equal dout.
absl::Status RopeBackward(bf16* dinp, const bf16* dout, const int32_t* pos, const float* inv_freq,
                          int N, int H, int hs, int64_t stride, cudaStream_t stream);

}  // namespace belay::kernels::cuda
