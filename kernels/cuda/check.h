// Turns CUDA runtime and cuBLAS(Lt) errors into absl::Status with the failing call and its
// location, and checks kernel launches.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace belay::kernels {

inline absl::Status CudaStatus(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", what, ": ", cudaGetErrorName(err),
                                          " (", cudaGetErrorString(err), ")"));
}

inline absl::Status CublasStatus(cublasStatus_t st, const char* what, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(file, ":", line, ": ", what, ": cuBLAS status ", static_cast<int>(st)));
}

// InvalidArgument naming the launcher: "op: " followed by the pieces of the message.
template <typename... Args>
absl::Status InvalidArgument(const char* op, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", args...));
}

}  // namespace belay::kernels

// Evaluates a CUDA runtime call and returns its error as absl::Status from the caller.
#define BELAY_CUDA_RETURN_IF_ERROR(call)                                 \
  do {                                                                   \
    ::absl::Status belay_cuda_status_ =                                  \
        ::belay::kernels::CudaStatus((call), #call, __FILE__, __LINE__); \
    if (!belay_cuda_status_.ok()) return belay_cuda_status_;             \
  } while (0)

// Returns the error of the kernel launch just made (bad configuration, no device, an
// earlier asynchronous fault) as absl::Status from the caller.
#define BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(kernel_name) \
  BELAY_CUDA_RETURN_IF_ERROR((static_cast<void>(kernel_name), cudaGetLastError()))

// Evaluates a cuBLAS / cuBLASLt call and returns its error as absl::Status from the caller.
#define BELAY_CUBLAS_RETURN_IF_ERROR(call)                                 \
  do {                                                                     \
    ::absl::Status belay_cublas_status_ =                                  \
        ::belay::kernels::CublasStatus((call), #call, __FILE__, __LINE__); \
    if (!belay_cublas_status_.ok()) return belay_cublas_status_;           \
  } while (0)

// Returns a non-OK absl::Status from the caller.
#define BELAY_RETURN_IF_NOT_OK(expr)               \
  do {                                             \
    ::absl::Status belay_status_ = (expr);         \
    if (!belay_status_.ok()) return belay_status_; \
  } while (0)
