// AdEMAMix on the GPU over fp32 master weights, also writing the bf16 working copy.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/ademamix.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kMaxBlocks = 4096;  // grid-stride beyond this

// Scalars of one update, computed on the host as the reference computes them.
struct Scalars {
  float lr, beta1, beta2, beta3, one_minus_beta3, alpha, eps, weight_decay, bc1, bc2;
};

// The reference's operations in its order; the rounded intrinsics keep the compiler from
// contracting a multiply and an add into one FMA.
__global__ void AdemamixKernel(float* master, bf16* params, const float* grads, float* m_fast,
                               float* m_slow, float* v, int64_t n, Scalars s) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = grads[i];
    const float p = master[i];
    const float mf =
        __fadd_rn(__fmul_rn(s.beta1, m_fast[i]), __fmul_rn(__fsub_rn(1.0f, s.beta1), g));
    const float ms = __fadd_rn(__fmul_rn(s.beta3, m_slow[i]), __fmul_rn(s.one_minus_beta3, g));
    const float vi =
        __fadd_rn(__fmul_rn(s.beta2, v[i]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, s.beta2), g), g));
    const float num = __fadd_rn(__fdiv_rn(mf, s.bc1), __fmul_rn(s.alpha, ms));
    const float den = __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, s.bc2)), s.eps);
    const float update = __fadd_rn(__fdiv_rn(num, den), __fmul_rn(s.weight_decay, p));
    const float w = __fsub_rn(p, __fmul_rn(s.lr, update));
    m_fast[i] = mf;
    m_slow[i] = ms;
    v[i] = vi;
    master[i] = w;
    if (params != nullptr) params[i] = ToBf16(w);
  }
}

}  // namespace

absl::Status AdemamixUpdate(float* master, bf16* params, const float* grads, float* m_fast,
                            float* m_slow, float* v, int64_t n, const cpu::AdemamixParams& p,
                            cudaStream_t stream) {
  constexpr const char* kOp = "AdemamixUpdate";
  if (n < 0) return InvalidArgument(kOp, "n must be >= 0, got ", n);
  if (p.step < 1) return InvalidArgument(kOp, "step must be >= 1 (1-based), got ", p.step);
  if (n == 0) return absl::OkStatus();
  if (master == nullptr || grads == nullptr) return InvalidArgument(kOp, "master or grads is null");
  if (m_fast == nullptr || m_slow == nullptr || v == nullptr) {
    return InvalidArgument(kOp, "m_fast, m_slow or v is null");
  }
  // As the reference: schedules and bias corrections in double, rounded once; 1 - beta3 from
  // the double (near 1, 1.0f - beta3 would keep only beta3's fp32 rounding).
  const double beta3 = cpu::AdemamixBeta3(p);
  Scalars s{};
  s.lr = p.lr;
  s.beta1 = p.beta1;
  s.beta2 = p.beta2;
  s.beta3 = static_cast<float>(beta3);
  s.one_minus_beta3 = static_cast<float>(1.0 - beta3);
  s.alpha = static_cast<float>(cpu::AdemamixAlpha(p));
  s.eps = p.eps;
  s.weight_decay = p.weight_decay;
  const auto step = static_cast<double>(p.step);
  s.bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), step));
  s.bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), step));
  const unsigned blocks = std::min(CeilDiv(n, kThreads), kMaxBlocks);
  AdemamixKernel<<<blocks, kThreads, 0, stream>>>(master, params, grads, m_fast, m_slow, v, n, s);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(AdemamixKernel);
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
