// Rotary position embedding (RoPE) with Llama-3-style frequency scaling, rotating the two
// halves of each head (x[i], x[i + hs/2]) by the angle position * inv_freq[i], as Megatron-LM
// (rotary_interleaved off) and Hugging Face's rotate_half do.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

struct RopeParams {
  double theta = 10000.0;  // base: inv_freq[i] = theta^(-2i / hs) before scaling
  // Llama-3 scaling (factor 1: none). Wavelengths longer than original_context /
  // low_freq_factor are divided by factor, shorter than original_context / high_freq_factor
  // kept, and those between interpolated smoothly.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_context = 8192;

  bool operator==(const RopeParams&) const = default;
};

// The hs/2 inverse frequencies for a head size hs (even), computed in double and rounded once.
void RopeInverseFrequencies(float* inv_freq, int hs, const RopeParams& p);

// Rotates H heads of hs values (hs even; the kernels abort otherwise) for each of N tokens: token
// n's heads start at inp + n * stride (H * hs contiguous values; stride >= H * hs lets q and k be
// rotated inside a packed qkv buffer: their heads are adjacent there). pos (N) are the position
// ids, which restart at 0 at each document start under document masking. out may equal inp.
void RopeForward(float* out, const float* inp, const int32_t* pos, int N, int H, int hs,
                 int64_t stride, const RopeParams& p);

// The transpose rotation: writes (=, not +=) dinp from dout, laid out as in RopeForward;
// dinp may equal dout, so a gradient buffer is turned around in place.
void RopeBackward(float* dinp, const float* dout, const int32_t* pos, int N, int H, int hs,
                  int64_t stride, const RopeParams& p);

}  // namespace belay::kernels::cpu
