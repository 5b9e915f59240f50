// Accelerators visible to this process. Built with and without CUDA: without it, or without
// a driver or device, ListCudaDevices says why there are none.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace belay::kernels {

struct CudaDevice {
  int index = 0;
  std::string name;
  int cc_major = 0;  // compute capability, e.g. 9.0 for H100/GH200
  int cc_minor = 0;
  uint64_t memory_bytes = 0;
  int multiprocessors = 0;
};

// Unavailable when this build has no CUDA path or the runtime finds no usable device (the
// message carries the runtime's reason); otherwise every device, at least one.
absl::StatusOr<std::vector<CudaDevice>> ListCudaDevices();

// Makes device `index` this thread's (and, set before any other CUDA call, the process's)
// current device. Unavailable without the CUDA path.
absl::Status UseCudaDevice(int index);

// The CUDA runtime version this binary was built against as "13.0", or "none".
std::string CudaRuntimeVersion();

}  // namespace belay::kernels
