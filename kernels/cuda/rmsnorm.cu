// RMSNorm on the GPU, one warp per normalised row; the weight gradient through per-chunk
// partials summed in a fixed order (no atomics).
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rmsnorm.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;
constexpr int kRowsPerChunk = 128;  // rows summed into one partial of dweight

// Where normalised row r (token r / H, head r % H) starts.
__device__ __forceinline__ int64_t RowOffset(int64_t r, int H, int hs, int64_t stride) {
  return r / H * stride + r % H * hs;
}

__global__ void ForwardKernel(bf16* out, float* rstd, const bf16* inp, const bf16* weight,
                              int64_t rows, int H, int hs, int64_t stride, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;  // whole warps only
  const int64_t base = RowOffset(r, H, hs, stride);
  float sq = 0;
  for (int c = lane; c < hs; c += 32) {
    const float x = ToFloat(inp[base + c]);
    sq += x * x;
  }
  const float s = 1.0f / sqrtf(WarpSum(sq) / static_cast<float>(hs) + eps);
  for (int c = lane; c < hs; c += 32) {
    out[base + c] = ToBf16(ToFloat(inp[base + c]) * s * ToFloat(weight[c]));
  }
  if (lane == 0) rstd[r] = s;
}

// dx = s * (w * g - xhat * mean(w * g * xhat)) with xhat = x * s, added to dinp's bf16 value
// in fp32 and rounded once.
__global__ void BackwardInputKernel(bf16* dinp, const bf16* dout, const bf16* inp,
                                    const bf16* weight, const float* rstd, int64_t rows, int H,
                                    int hs, int64_t stride) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int64_t base = RowOffset(r, H, hs, stride);
  const float s = rstd[r];
  float dot = 0;
  for (int c = lane; c < hs; c += 32) {
    dot += ToFloat(weight[c]) * ToFloat(dout[base + c]) * ToFloat(inp[base + c]) * s;
  }
  const float mean_dot = WarpSum(dot) / static_cast<float>(hs);
  for (int c = lane; c < hs; c += 32) {
    const float g = ToFloat(dout[base + c]), x = ToFloat(inp[base + c]);
    const float d = (ToFloat(weight[c]) * g - x * s * mean_dot) * s;
    dinp[base + c] = ToBf16(ToFloat(dinp[base + c]) + d);
  }
}

// scratch[chunk][c]: the sum over the chunk's rows, in row order, of xhat * g for channel c.
__global__ void WeightPartialKernel(float* scratch, const bf16* dout, const bf16* inp,
                                    const float* rstd, int64_t rows, int H, int hs,
                                    int64_t stride) {
  const int64_t r0 = int64_t{blockIdx.y} * kRowsPerChunk;
  const int64_t r1 = min(rows, r0 + kRowsPerChunk);
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < hs; c += gridDim.x * blockDim.x) {
    float sum = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = RowOffset(r, H, hs, stride) + c;
      sum += ToFloat(inp[i]) * rstd[r] * ToFloat(dout[i]);
    }
    scratch[int64_t{blockIdx.y} * hs + c] = sum;
  }
}

// dweight[c] += the chunks' partials added in chunk order.
__global__ void WeightSumKernel(float* dweight, const float* scratch, int chunks, int hs) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= hs) return;
  float total = 0;
  for (int k = 0; k < chunks; ++k) total += scratch[int64_t{k} * hs + c];
  dweight[c] += total;
}

int64_t Chunks(int64_t rows) { return (rows + kRowsPerChunk - 1) / kRowsPerChunk; }

absl::Status CheckShape(const char* op, int N, int H, int hs, int64_t stride) {
  if (N <= 0) return InvalidArgument(op, "N must be > 0, got ", N);
  if (H <= 0) return InvalidArgument(op, "H must be > 0, got ", H);
  if (hs <= 0) return InvalidArgument(op, "C (head size) must be > 0, got ", hs);
  if (stride < int64_t{H} * hs) {
    return InvalidArgument(op, "stride ", stride, " is less than H * hs = ", int64_t{H} * hs);
  }
  if (CeilDiv(int64_t{N} * H, kRowsPerBlock) > 0x7fffffffu) {
    return InvalidArgument(op, "too many rows for the grid: ", int64_t{N} * H);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RmsNormHeadsForward(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N,
                                 int H, int hs, int64_t stride, float eps, cudaStream_t stream) {
  constexpr const char* kOp = "RmsNormForward";
  BELAY_RETURN_IF_NOT_OK(CheckShape(kOp, N, H, hs, stride));
  if (out == nullptr || rstd == nullptr) return InvalidArgument(kOp, "out or rstd is null");
  if (inp == nullptr || weight == nullptr) return InvalidArgument(kOp, "inp or weight is null");
  if (!(eps > 0)) return InvalidArgument(kOp, "eps must be > 0, got ", eps);
  const int64_t rows = int64_t{N} * H;
  ForwardKernel<<<CeilDiv(rows, kRowsPerBlock), kThreads, 0, stream>>>(out, rstd, inp, weight, rows,
                                                                       H, hs, stride, eps);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ForwardKernel);
  return absl::OkStatus();
}

absl::Status RmsNormForward(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N,
                            int C, float eps, cudaStream_t stream) {
  return RmsNormHeadsForward(out, rstd, inp, weight, N, 1, C, C, eps, stream);
}

size_t RmsNormBackwardScratch(int64_t rows, int C) {
  if (rows <= 0 || C <= 0) return 0;
  return static_cast<size_t>(Chunks(rows)) * static_cast<size_t>(C);
}

absl::Status RmsNormHeadsBackward(bf16* dinp, float* dweight, float* scratch, const bf16* dout,
                                  const bf16* inp, const bf16* weight, const float* rstd, int N,
                                  int H, int hs, int64_t stride, cudaStream_t stream) {
  constexpr const char* kOp = "RmsNormBackward";
  BELAY_RETURN_IF_NOT_OK(CheckShape(kOp, N, H, hs, stride));
  const int64_t rows = int64_t{N} * H;
  if (Chunks(rows) > 65535) return InvalidArgument(kOp, "too many rows for the grid: ", rows);
  if (dinp == nullptr || dweight == nullptr) return InvalidArgument(kOp, "dinp or dweight is null");
  if (scratch == nullptr) return InvalidArgument(kOp, "scratch is null");
  if (dout == nullptr || inp == nullptr) return InvalidArgument(kOp, "dout or inp is null");
  if (weight == nullptr || rstd == nullptr) return InvalidArgument(kOp, "weight or rstd is null");
  BackwardInputKernel<<<CeilDiv(rows, kRowsPerBlock), kThreads, 0, stream>>>(
      dinp, dout, inp, weight, rstd, rows, H, hs, stride);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardInputKernel);
  const auto chunks = static_cast<unsigned>(Chunks(rows));
  WeightPartialKernel<<<dim3(CeilDiv(hs, kThreads), chunks), kThreads, 0, stream>>>(
      scratch, dout, inp, rstd, rows, H, hs, stride);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(WeightPartialKernel);
  WeightSumKernel<<<CeilDiv(hs, kThreads), kThreads, 0, stream>>>(dweight, scratch,
                                                                  static_cast<int>(chunks), hs);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(WeightSumKernel);
  return absl::OkStatus();
}

absl::Status RmsNormBackward(bf16* dinp, float* dweight, float* scratch, const bf16* dout,
                             const bf16* inp, const bf16* weight, const float* rstd, int N, int C,
                             cudaStream_t stream) {
  return RmsNormHeadsBackward(dinp, dweight, scratch, dout, inp, weight, rstd, N, 1, C, C, stream);
}

}  // namespace belay::kernels::cuda
