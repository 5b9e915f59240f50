// xIELU on the GPU: elementwise forward; backward writes dinp and per-block partial sums of
// the scalar gradients, which one block then adds in order.
#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/xielu.h"
#include "kernels/xielu.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kBlock = 4096;  // elements per partial sum of the scalar gradients
constexpr int kSumThreads = 1024;
constexpr unsigned kMaxBlocks = 4096;  // forward: grid-stride beyond this
constexpr float kBeta = cpu::kXieluBeta;
constexpr float kEps = cpu::kXieluEps;

__device__ __forceinline__ double Softplus(double a) { return a > 20 ? a : log1p(exp(a)); }
__device__ __forceinline__ double Sigmoid(double a) { return 1 / (1 + exp(-a)); }
__device__ __forceinline__ float AlphaP(const float* a_p) {
  return static_cast<float>(Softplus(*a_p));
}
__device__ __forceinline__ float AlphaN(const float* a_n) {
  return static_cast<float>(kBeta + Softplus(*a_n));
}

// The reference's fp32 operations in its order (the rounded intrinsics keep them from being
// contracted into FMAs).
__global__ void ForwardKernel(bf16* out, const bf16* inp, int64_t n, const float* a_p,
                              const float* a_n) {
  const float ap = AlphaP(a_p), an = AlphaN(a_n);
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = ToFloat(inp[i]);
    const float y =
        x > 0 ? __fadd_rn(__fmul_rn(__fmul_rn(ap, x), x), __fmul_rn(kBeta, x))
              : __fadd_rn(__fsub_rn(__fmul_rn(an, expm1f(fminf(x, kEps))), __fmul_rn(an, x)),
                          __fmul_rn(kBeta, x));
    out[i] = ToBf16(y);
  }
}

// Block b owns elements [b * kBlock, (b + 1) * kBlock): adds into their dinp and writes the
// block's sums of dout * dy/dalpha_p and dout * dy/dalpha_n to partial[2b], partial[2b + 1].
__global__ void BackwardKernel(bf16* dinp, double* partial, const bf16* dout, const bf16* inp,
                               int64_t n, const float* a_p, const float* a_n) {
  __shared__ double shared[32];
  const float ap = AlphaP(a_p), an = AlphaN(a_n);
  const int64_t begin = int64_t{blockIdx.x} * kBlock;
  const int64_t end = min(n, begin + kBlock);
  double sum_p = 0, sum_n = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float x = ToFloat(inp[i]);
    const float g = ToFloat(dout[i]);
    float d;
    if (x > 0) {
      d = __fmul_rn(g, __fadd_rn(__fmul_rn(__fmul_rn(2.0f, ap), x), kBeta));
      sum_p += static_cast<double>(g) * x * x;
    } else {
      // d/dx expm1(min(x, eps)) is e^x below eps and 0 above it.
      const float dexp = x < kEps ? expf(x) : 0.0f;
      d = __fmul_rn(g, __fadd_rn(__fmul_rn(an, __fsub_rn(dexp, 1.0f)), kBeta));
      sum_n += static_cast<double>(g) * __fsub_rn(expm1f(fminf(x, kEps)), x);
    }
    dinp[i] = ToBf16(__fadd_rn(ToFloat(dinp[i]), d));
  }
  sum_p = BlockSum(sum_p, shared);
  sum_n = BlockSum(sum_n, shared);
  if (threadIdx.x == 0) {
    partial[2 * int64_t{blockIdx.x}] = sum_p;
    partial[2 * int64_t{blockIdx.x} + 1] = sum_n;
  }
}

// One block: thread k adds partials k, k + kSumThreads, ... in order, then the block sum (a
// fixed order); *da += total * d alpha / d a.
__global__ void ScalarSumKernel(float* da_p, float* da_n, const double* partial, int64_t blocks,
                                const float* a_p, const float* a_n) {
  __shared__ double shared[32];
  double sum_p = 0, sum_n = 0;
  for (int64_t k = threadIdx.x; k < blocks; k += blockDim.x) {
    sum_p += partial[2 * k];
    sum_n += partial[2 * k + 1];
  }
  sum_p = BlockSum(sum_p, shared);
  sum_n = BlockSum(sum_n, shared);
  if (threadIdx.x == 0) {
    *da_p += static_cast<float>(sum_p * Sigmoid(*a_p));
    *da_n += static_cast<float>(sum_n * Sigmoid(*a_n));
  }
}

int64_t Blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }

}  // namespace

absl::Status XieluForward(bf16* out, const bf16* inp, int64_t n, const float* a_p, const float* a_n,
                          cudaStream_t stream) {
  constexpr const char* kOp = "XieluForward";
  if (n < 0) return InvalidArgument(kOp, "n must be >= 0, got ", n);
  if (n == 0) return absl::OkStatus();
  if (out == nullptr || inp == nullptr) return InvalidArgument(kOp, "out or inp is null");
  if (a_p == nullptr || a_n == nullptr) return InvalidArgument(kOp, "a_p or a_n is null");
  const unsigned blocks = std::min(CeilDiv(n, kThreads), kMaxBlocks);
  ForwardKernel<<<blocks, kThreads, 0, stream>>>(out, inp, n, a_p, a_n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ForwardKernel);
  return absl::OkStatus();
}

size_t XieluBackwardScratch(int64_t n) { return n <= 0 ? 0 : 2 * static_cast<size_t>(Blocks(n)); }

absl::Status XieluBackward(bf16* dinp, float* da_p, float* da_n, double* scratch, const bf16* dout,
                           const bf16* inp, int64_t n, const float* a_p, const float* a_n,
                           cudaStream_t stream) {
  constexpr const char* kOp = "XieluBackward";
  if (n < 0) return InvalidArgument(kOp, "n must be >= 0, got ", n);
  if (n == 0) return absl::OkStatus();
  if (Blocks(n) > 0x7fffffff) return InvalidArgument(kOp, "n too large for the grid, got ", n);
  if (dinp == nullptr || dout == nullptr || inp == nullptr) {
    return InvalidArgument(kOp, "dinp, dout or inp is null");
  }
  if (da_p == nullptr || da_n == nullptr) return InvalidArgument(kOp, "da_p or da_n is null");
  if (a_p == nullptr || a_n == nullptr) return InvalidArgument(kOp, "a_p or a_n is null");
  if (scratch == nullptr) return InvalidArgument(kOp, "scratch is null");
  const int64_t blocks = Blocks(n);
  BackwardKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(dinp, scratch, dout, inp,
                                                                         n, a_p, a_n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardKernel);
  ScalarSumKernel<<<1, kSumThreads, 0, stream>>>(da_p, da_n, scratch, blocks, a_p, a_n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ScalarSumKernel);
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
