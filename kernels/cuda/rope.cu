// RoPE on the GPU: one thread per (token, frequency), rotating that pair in every head.
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rope.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// sign 1 rotates by +angle (forward), -1 by -angle (backward). The products and sums use the
// explicitly rounded intrinsics, as the reference's fp32 arithmetic (no contraction into FMAs).
__global__ void RotateKernel(bf16* out, const bf16* inp, const int32_t* pos, const float* inv_freq,
                             int N, int H, int hs, int64_t stride, float sign) {
  const int half = hs / 2;
  const int64_t j = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= int64_t{N} * half) return;
  const int64_t n = j / half;
  const int i = static_cast<int>(j % half);
  // The angle of the fp32 frequency in double, as the reference: long positions keep their phase.
  double sin_d, cos_d;
  sincos(static_cast<double>(pos[n]) * static_cast<double>(inv_freq[i]), &sin_d, &cos_d);
  const auto c = static_cast<float>(cos_d);
  const float s = sign * static_cast<float>(sin_d);
  for (int h = 0; h < H; ++h) {
    const int64_t base = n * stride + int64_t{h} * hs;
    const float x1 = ToFloat(inp[base + i]);
    const float x2 = ToFloat(inp[base + i + half]);
    out[base + i] = ToBf16(__fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
    out[base + i + half] = ToBf16(__fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s)));
  }
}

absl::Status CheckHeadSize(const char* op, int hs) {
  if (hs <= 0 || hs % 2 != 0) return InvalidArgument(op, "hs must be even and > 0, got ", hs);
  return absl::OkStatus();
}

absl::Status Rotate(const char* op, bf16* out, const bf16* inp, const int32_t* pos,
                    const float* inv_freq, int N, int H, int hs, int64_t stride, float sign,
                    cudaStream_t stream) {
  BELAY_RETURN_IF_NOT_OK(CheckHeadSize(op, hs));
  if (N <= 0) return InvalidArgument(op, "N must be > 0, got ", N);
  if (H <= 0) return InvalidArgument(op, "H must be > 0, got ", H);
  if (stride < int64_t{H} * hs) {
    return InvalidArgument(op, "stride ", stride, " is less than H * hs = ", int64_t{H} * hs);
  }
  if (out == nullptr || inp == nullptr) return InvalidArgument(op, "out or inp is null");
  if (pos == nullptr || inv_freq == nullptr) return InvalidArgument(op, "pos or inv_freq is null");
  const int64_t threads = int64_t{N} * (hs / 2);
  RotateKernel<<<CeilDiv(threads, kThreads), kThreads, 0, stream>>>(out, inp, pos, inv_freq, N, H,
                                                                    hs, stride, sign);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(RotateKernel);
  return absl::OkStatus();
}

}  // namespace

absl::Status RopeForward(bf16* out, const bf16* inp, const int32_t* pos, const float* inv_freq,
                         int N, int H, int hs, int64_t stride, cudaStream_t stream) {
  return Rotate("RopeForward", out, inp, pos, inv_freq, N, H, hs, stride, 1.0f, stream);
}

absl::Status RopeBackward(bf16* dinp, const bf16* dout, const int32_t* pos, const float* inv_freq,
                          int N, int H, int hs, int64_t stride, cudaStream_t stream) {
  return Rotate("RopeBackward", dinp, dout, pos, inv_freq, N, H, hs, stride, -1.0f, stream);
}

}  // namespace belay::kernels::cuda
