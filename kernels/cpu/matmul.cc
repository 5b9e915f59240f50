// CPU reference for the linear layer (kernels/matmul.h): OpenBLAS sgemm for the products.
#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cstdint>

namespace belay::kernels::cpu {
namespace {

// Output channels per task when dbias is summed over rows (each sum stays in one task, rows in
// order, so the result does not depend on the thread count).
constexpr int kChannelBlock = 64;

}  // namespace

void MatmulForward(float* out, const float* inp, const float* weight, const float* bias, int N,
                   int C, int OC) {
  // With beta 0 sgemm never reads out, so whatever it held (NaN included) is overwritten.
  float beta = 0.0f;
  if (bias != nullptr) {
#pragma omp parallel for
    for (int i = 0; i < N; ++i) std::copy(bias, bias + OC, out + int64_t{i} * OC);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, beta, out,
              OC);
}

void MatmulBackward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                    const float* weight, int N, int C, int OC) {
  // dinp (N,C) += dout (N,OC) · weight (OC,C)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f,
              dinp, C);
  // dweight (OC,C) += doutᵀ (OC,N) · inp (N,C)
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f,
              dweight, C);
  if (dbias == nullptr) return;
  const int blocks = (OC + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for
  for (int blk = 0; blk < blocks; ++blk) {
    const int o0 = blk * kChannelBlock;
    const int o1 = std::min(OC, o0 + kChannelBlock);
    for (int i = 0; i < N; ++i) {
      const float* g = dout + int64_t{i} * OC;
      for (int o = o0; o < o1; ++o) dbias[o] += g[o];
    }
  }
}

}  // namespace belay::kernels::cpu
