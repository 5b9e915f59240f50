// Device enumeration through the CUDA runtime.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/device.h"

namespace belay::kernels {

absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("no usable CUDA device: ", cudaGetErrorName(err),
                                               " (", cudaGetErrorString(err), ")"));
  }
  if (count == 0) return absl::UnavailableError("no CUDA device found");
  std::vector<CudaDevice> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    BELAY_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, i));
    devices.push_back(CudaDevice{i, prop.name, prop.major, prop.minor,
                                 static_cast<uint64_t>(prop.totalGlobalMem),
                                 prop.multiProcessorCount});
  }
  return devices;
}

absl::Status UseCudaDevice(int index) {
  BELAY_CUDA_RETURN_IF_ERROR(cudaSetDevice(index));
  return absl::OkStatus();
}

std::string CudaRuntimeVersion() {
  return absl::StrCat(CUDART_VERSION / 1000, ".", (CUDART_VERSION % 1000) / 10);
}

}  // namespace belay::kernels
