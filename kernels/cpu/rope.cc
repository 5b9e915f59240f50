// CPU reference for rotary position embedding with Llama-3 frequency scaling (kernels/rope.h).
#include "kernels/rope.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numbers>
#include <vector>

namespace belay::kernels::cpu {
namespace {

// Rotates every head of every token by +angle (sign 1) or -angle (sign -1).
void Rotate(float* out, const float* inp, const int32_t* pos, int N, int H, int hs, int64_t stride,
            const RopeParams& p, float sign) {
  if (hs <= 0 || hs % 2 != 0 || stride < int64_t{H} * hs) {
    // A caller's bug: half a pair, or heads overlapping the next token's.
    std::fprintf(stderr, "RoPE: head size %d must be even, stride %lld at least H %d * hs\n", hs,
                 static_cast<long long>(stride), H);
    std::abort();
  }
  const int half = hs / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  RopeInverseFrequencies(inv_freq.data(), hs, p);
#pragma omp parallel
  {
    std::vector<float> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
#pragma omp for
    for (int n = 0; n < N; ++n) {
      // The angle of the fp32 frequency, in double: positions up to 2^16 and more keep their
      // phase (an fp32 product would be off by ~1e-3 rad there).
      for (int i = 0; i < half; ++i) {
        const double angle = static_cast<double>(pos[n]) * inv_freq[static_cast<size_t>(i)];
        cos_t[static_cast<size_t>(i)] = static_cast<float>(std::cos(angle));
        sin_t[static_cast<size_t>(i)] = sign * static_cast<float>(std::sin(angle));
      }
      for (int h = 0; h < H; ++h) {
        const float* x = inp + n * stride + int64_t{h} * hs;
        float* y = out + n * stride + int64_t{h} * hs;
        for (int i = 0; i < half; ++i) {
          const float c = cos_t[static_cast<size_t>(i)];
          const float s = sin_t[static_cast<size_t>(i)];
          const float x1 = x[i];
          const float x2 = x[i + half];
          y[i] = x1 * c - x2 * s;
          y[i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
}

}  // namespace

void RopeInverseFrequencies(float* inv_freq, int hs, const RopeParams& p) {
  const double low_wavelen = p.original_context / p.low_freq_factor;
  const double high_wavelen = p.original_context / p.high_freq_factor;
  for (int i = 0; i < hs / 2; ++i) {
    const double f = std::pow(p.theta, -2.0 * i / hs);
    double scaled = f;
    if (p.factor != 1.0) {
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        scaled = f / p.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (p.original_context / wavelen - p.low_freq_factor) /
                              (p.high_freq_factor - p.low_freq_factor);
        scaled = (1 - smooth) * f / p.factor + smooth * f;
      }
    }
    inv_freq[i] = static_cast<float>(scaled);
  }
}

void RopeForward(float* out, const float* inp, const int32_t* pos, int N, int H, int hs,
                 int64_t stride, const RopeParams& p) {
  Rotate(out, inp, pos, N, H, hs, stride, p, 1.0f);
}

void RopeBackward(float* dinp, const float* dout, const int32_t* pos, int N, int H, int hs,
                  int64_t stride, const RopeParams& p) {
  Rotate(dinp, dout, pos, N, H, hs, stride, p, -1.0f);
}

}  // namespace belay::kernels::cpu
