// The rank-order sum of the NCCL communicator, on the device (nccl_sum.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "absl/status/status.h"

namespace belay::comm::internal {

// out[i] = ((c_0[i] + c_1[i]) + c_2[i]) + ... in fp32 (no fused operations), where
// `contributions` holds `count` blocks of n elements one after another; queued on `stream`.
// `out` must not overlap `contributions`.
absl::Status SumInRankOrderOnDevice(const float* contributions, int count, size_t n, float* out,
                                    cudaStream_t stream);

}  // namespace belay::comm::internal
