// AdamW on the GPU over fp32 master weights, also writing the bf16 working copy.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

// The CPU reference's arithmetic, operation for operation: the explicitly rounded intrinsics
// keep the compiler from contracting a multiply and an add into one FMA.
__global__ void AdamWKernel(float* master, bf16* params, const float* grads, float* m, float* v,
                            int64_t n, float lr, float beta1, float beta2, float eps, float decay,
                            float bc1, float bc2) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = grads[i];
    const float p = master[i];
    float w = __fsub_rn(p, __fmul_rn(decay, p));
    const float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(__fsub_rn(1.0f, beta1), g));
    const float vi =
        __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, beta2), g), g));
    const float mhat = __fdiv_rn(mi, bc1);
    const float vhat = __fdiv_rn(vi, bc2);
    w = __fsub_rn(w, __fdiv_rn(__fmul_rn(lr, mhat), __fadd_rn(__fsqrt_rn(vhat), eps)));
    m[i] = mi;
    v[i] = vi;
    master[i] = w;
    if (params != nullptr) params[i] = ToBf16(w);
  }
}

__global__ void ConvertToBf16Kernel(const float* src, bf16* dst, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = ToBf16(src[i]);
}

template <typename... Args>
absl::Status Invalid(const char* op, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", args...));
}

}  // namespace

absl::Status AdamWUpdate(float* master, bf16* params, const float* grads, float* m, float* v,
                         int64_t n, const cpu::AdamWParams& p, cudaStream_t stream) {
  constexpr const char* kOp = "AdamWUpdate";
  if (n < 0) return Invalid(kOp, "n must be >= 0, got ", n);
  if (p.step < 1) return Invalid(kOp, "step must be >= 1 (1-based), got ", p.step);
  if (n == 0) return absl::OkStatus();
  if (master == nullptr) return Invalid(kOp, "master is null");
  if (grads == nullptr) return Invalid(kOp, "grads is null");
  if (m == nullptr || v == nullptr) return Invalid(kOp, "m or v is null");
  // Bias corrections in double, rounded once, exactly as the CPU reference.
  const auto bc1 =
      static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step)));
  const auto bc2 =
      static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step)));
  const float decay = p.lr * p.weight_decay;
  const unsigned blocks = std::min(CeilDiv(n, kThreads), kMaxBlocks);
  AdamWKernel<<<blocks, kThreads, 0, stream>>>(master, params, grads, m, v, n, p.lr, p.beta1,
                                               p.beta2, p.eps, decay, bc1, bc2);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(AdamWKernel);
  return absl::OkStatus();
}

absl::Status ConvertToBf16(const float* src, bf16* dst, int64_t n, cudaStream_t stream) {
  constexpr const char* kOp = "ConvertToBf16";
  if (n < 0) return Invalid(kOp, "n must be >= 0, got ", n);
  if (n == 0) return absl::OkStatus();
  if (src == nullptr || dst == nullptr) return Invalid(kOp, "src or dst is null");
  const unsigned blocks = std::min(CeilDiv(n, kThreads), kMaxBlocks);
  ConvertToBf16Kernel<<<blocks, kThreads, 0, stream>>>(src, dst, n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ConvertToBf16Kernel);
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
