// Device enumeration for builds without the CUDA path.
#include "kernels/device.h"

namespace belay::kernels {

absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices() {
  return absl::UnavailableError("this build has no CUDA path (BELAY_WITH_CUDA=OFF or no nvcc)");
}

absl::Status UseCudaDevice(int) {
  return absl::UnavailableError("this build has no CUDA path (BELAY_WITH_CUDA=OFF or no nvcc)");
}

std::string CudaRuntimeVersion() { return "none"; }

}  // namespace belay::kernels
