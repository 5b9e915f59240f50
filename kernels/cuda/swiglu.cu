// SwiGLU on the GPU: elementwise over (row, feature), grid-stride.
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/swiglu.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void ForwardKernel(bf16* out, const bf16* inp, int64_t n, int F) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t gate_at = i / F * 2 * F + i % F;
    const float gate = ToFloat(inp[gate_at]), up = ToFloat(inp[gate_at + F]);
    out[i] = ToBf16(gate / (1.0f + expf(-gate)) * up);  // the reference's order
  }
}

__global__ void BackwardKernel(bf16* dinp, const bf16* dout, const bf16* inp, int64_t n, int F) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t gate_at = i / F * 2 * F + i % F;
    const float gate = ToFloat(inp[gate_at]), up = ToFloat(inp[gate_at + F]);
    const float g = ToFloat(dout[i]);
    const float sig = Sigmoid(gate);
    // silu'(x) = sigmoid(x) * (1 + x * (1 - sigmoid(x))).
    const float dgate = g * up * sig * (1.0f + gate * (1.0f - sig));
    const float dup = g * gate * sig;
    dinp[gate_at] = ToBf16(ToFloat(dinp[gate_at]) + dgate);
    dinp[gate_at + F] = ToBf16(ToFloat(dinp[gate_at + F]) + dup);
  }
}

absl::Status CheckShape(const char* op, int N, int F) {
  if (N <= 0) return InvalidArgument(op, "N must be > 0, got ", N);
  if (F <= 0) return InvalidArgument(op, "F must be > 0, got ", F);
  return absl::OkStatus();
}

unsigned Blocks(int64_t n) { return std::min(CeilDiv(n, kThreads), kMaxBlocks); }

}  // namespace

absl::Status SwigluForward(bf16* out, const bf16* inp, int N, int F, cudaStream_t stream) {
  constexpr const char* kOp = "SwigluForward";
  BELAY_RETURN_IF_NOT_OK(CheckShape(kOp, N, F));
  if (out == nullptr || inp == nullptr) return InvalidArgument(kOp, "out or inp is null");
  const int64_t n = int64_t{N} * F;
  ForwardKernel<<<Blocks(n), kThreads, 0, stream>>>(out, inp, n, F);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ForwardKernel);
  return absl::OkStatus();
}

absl::Status SwigluBackward(bf16* dinp, const bf16* dout, const bf16* inp, int N, int F,
                            cudaStream_t stream) {
  constexpr const char* kOp = "SwigluBackward";
  BELAY_RETURN_IF_NOT_OK(CheckShape(kOp, N, F));
  if (dinp == nullptr || dout == nullptr || inp == nullptr) {
    return InvalidArgument(kOp, "dinp, dout or inp is null");
  }
  const int64_t n = int64_t{N} * F;
  BackwardKernel<<<Blocks(n), kThreads, 0, stream>>>(dinp, dout, inp, n, F);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardKernel);
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
