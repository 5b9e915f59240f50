// Global gradient norm (sum of squares, deterministic, no atomics) and scaling on the GPU.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/grad_norm.h"

namespace belay::kernels::cuda {
namespace {

// A fixed grid, whatever the device: element i always lands in the same thread's sum, so the
// rounding, and the result, repeat bit for bit.
constexpr int kPartialBlocks = 512;
constexpr int kThreads = 256;
constexpr unsigned kMaxScaleBlocks = 4096;

// Thread sums in double over a grid stride, then a block sum into scratch[blockIdx.x].
__global__ void PartialSumOfSquaresKernel(double* scratch, const float* g, int64_t n) {
  __shared__ double shared[32];
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  double s = 0;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double x = g[i];
    s += x * x;  // exact: a float's square fits in a double
  }
  s = BlockSum(s, shared);
  if (threadIdx.x == 0) scratch[blockIdx.x] = s;
}

// One block of kPartialBlocks threads, one partial each, summed in the block's fixed order.
__global__ void FinalSumKernel(double* out, const double* scratch) {
  __shared__ double shared[32];
  const double s = BlockSum(scratch[threadIdx.x], shared);
  if (threadIdx.x == 0) *out = s;
}

__global__ void ScaleKernel(float* g, int64_t n, float s) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    g[i] *= s;
  }
}

__global__ void AccumulateKernel(float* dst, const float* src, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = __fadd_rn(dst[i], src[i]);
  }
}

template <typename... Args>
absl::Status Invalid(const char* op, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", args...));
}

}  // namespace

size_t SumOfSquaresScratch() { return kPartialBlocks; }

absl::Status SumOfSquares(double* out, double* scratch, const float* g, int64_t n,
                          cudaStream_t stream) {
  constexpr const char* kOp = "SumOfSquares";
  if (n < 0) return Invalid(kOp, "n must be >= 0, got ", n);
  if (out == nullptr) return Invalid(kOp, "out is null");
  if (scratch == nullptr) return Invalid(kOp, "scratch is null");
  if (g == nullptr && n > 0) return Invalid(kOp, "g is null");
  PartialSumOfSquaresKernel<<<kPartialBlocks, kThreads, 0, stream>>>(scratch, g, n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(PartialSumOfSquaresKernel);
  FinalSumKernel<<<1, kPartialBlocks, 0, stream>>>(out, scratch);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(FinalSumKernel);
  return absl::OkStatus();
}

absl::Status Scale(float* g, int64_t n, float s, cudaStream_t stream) {
  constexpr const char* kOp = "Scale";
  if (n < 0) return Invalid(kOp, "n must be >= 0, got ", n);
  if (n == 0) return absl::OkStatus();
  if (g == nullptr) return Invalid(kOp, "g is null");
  ScaleKernel<<<std::min(CeilDiv(n, kThreads), kMaxScaleBlocks), kThreads, 0, stream>>>(g, n, s);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ScaleKernel);
  return absl::OkStatus();
}

absl::Status Accumulate(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  constexpr const char* kOp = "Accumulate";
  if (n < 0) return Invalid(kOp, "n must be >= 0, got ", n);
  if (n == 0) return absl::OkStatus();
  if (dst == nullptr || src == nullptr) return Invalid(kOp, "dst or src is null");
  if (dst != src && dst < src + n && src < dst + n) return Invalid(kOp, "dst and src overlap");
  AccumulateKernel<<<std::min(CeilDiv(n, kThreads), kMaxScaleBlocks), kThreads, 0, stream>>>(
      dst, src, n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(AccumulateKernel);
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
