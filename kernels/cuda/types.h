// Element types of the GPU path: bf16 activations and parameters, fp32 master weights,
// gradients and optimizer state. Includable from host C++ (no device code).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace belay::kernels::cuda {

using bf16 = __nv_bfloat16;

}  // namespace belay::kernels::cuda
