// Force-included (nvcc -include) into llm.c's train_gpt2.cu by scripts/llmc-build.sh. The llm.c
// snapshot predates CUDA 13, where cudaMemAdvise takes a cudaMemLocation instead of a device
// number; llm.c calls it with cudaCpuDeviceId, only when it falls back to managed memory for the
// optimizer state. This supplies the device-number form for CUDA 13 and later, so llm.c builds
// unmodified; with an older CUDA it is empty.
#pragma once
#include <cuda_runtime_api.h>

#if CUDART_VERSION >= 13000
inline cudaError_t cudaMemAdvise(const void* ptr, size_t bytes, cudaMemoryAdvise advice,
                                 int device) {
  cudaMemLocation where{};
  where.type = device == cudaCpuDeviceId ? cudaMemLocationTypeHost : cudaMemLocationTypeDevice;
  where.id = device == cudaCpuDeviceId ? 0 : device;
  return cudaMemAdvise(ptr, bytes, advice, where);
}
#endif
