// RoPE's inverse frequencies for the GPU, from the CPU reference's function (host C++20: the
// reference's header is not nvcc's C++17).
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/rope.h"
#include "kernels/rope.h"

namespace belay::kernels::cuda {

absl::Status RopeUploadInverseFrequencies(float* inv_freq, int hs, const cpu::RopeParams& p,
                                          cudaStream_t stream) {
  constexpr const char* kOp = "RopeUploadInverseFrequencies";
  if (hs <= 0 || hs % 2 != 0) return InvalidArgument(kOp, "hs must be even and > 0, got ", hs);
  if (inv_freq == nullptr) return InvalidArgument(kOp, "inv_freq is null");
  std::vector<float> host(static_cast<size_t>(hs / 2));
  cpu::RopeInverseFrequencies(host.data(), hs, p);
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(inv_freq, host.data(), host.size() * sizeof(float),
                                             cudaMemcpyHostToDevice, stream));
  // `host` is freed on return: wait for the copy.
  BELAY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
