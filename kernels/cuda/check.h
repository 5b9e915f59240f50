// Turns CUDA runtime errors into absl::Status with the failing call and its location.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace belay::kernels {

inline absl::Status CudaStatus(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", what, ": ", cudaGetErrorName(err),
                                          " (", cudaGetErrorString(err), ")"));
}

}  // namespace belay::kernels

// Evaluates a CUDA runtime call and returns its error as absl::Status from the caller.
#define BELAY_CUDA_RETURN_IF_ERROR(call)                                                    \
  do {                                                                                      \
    ::absl::Status belay_cuda_status_ =                                                     \
        ::belay::kernels::CudaStatus((call), #call, __FILE__, __LINE__);                    \
    if (!belay_cuda_status_.ok()) return belay_cuda_status_;                                \
  } while (0)
