// The rank-order sum on the device: one thread per element walks the ranks in order, so each
// element's additions happen in the order the CPU reference and MpiCommunicator use.
#include "kernels/cuda/check.h"
#include "worker/comm/nccl_sum.h"

namespace belay::comm::internal {
namespace {

__global__ void SumInRankOrderKernel(const float* __restrict__ contributions, int count, size_t n,
                                     float* __restrict__ out) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float sum = contributions[i];
    for (int r = 1; r < count; ++r)
      sum = __fadd_rn(sum, contributions[static_cast<size_t>(r) * n + i]);
    out[i] = sum;
  }
}

}  // namespace

absl::Status SumInRankOrderOnDevice(const float* contributions, int count, size_t n, float* out,
                                    cudaStream_t stream) {
  if (n == 0 || count <= 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const size_t wanted = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(wanted < 65536 ? wanted : 65536);
  SumInRankOrderKernel<<<blocks, kThreads, 0, stream>>>(contributions, count, n, out);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(SumInRankOrderKernel);
  return absl::OkStatus();
}

}  // namespace belay::comm::internal
