// Linear layers on the GPU through cuBLASLt, with the bias and GELU fused into the matmul's
// epilogue (reference: kernels/matmul.h and kernels/gelu.h). Also the general bf16 matmul
// the attention builds on.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// A cuBLASLt handle and its workspace. One per thread of work; launches using it must not
// run concurrently on different streams (they share the workspace).
class Blas {
 public:
  static absl::StatusOr<std::unique_ptr<Blas>> Create(size_t workspace_bytes = size_t{32} << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  cublasLtHandle_t handle() const { return handle_; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

 private:
  Blas() = default;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

// One (batched) column-major product D = alpha · op(A) · op(B) + beta · D, A and B bf16,
// D bf16 or fp32, fp32 accumulation. Row-major callers swap operands (see matmul.cu).
struct Gemm {
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;  // D is m×n; op(A) m×k; op(B) k×n
  const bf16* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const bf16* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* d = nullptr;
  bool d_fp32 = false;
  int64_t ldd = 0, stride_d = 0;
  int batch = 1;
  float alpha = 1.0f, beta = 0.0f;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const bf16* bias = nullptr;  // m entries, for the *_BIAS epilogues
  bf16* aux = nullptr;         // GELU_AUX: pre-activation out; DGELU: pre-activation in
  int64_t aux_ld = 0;
};
absl::Status RunGemm(Blas& blas, const Gemm& g, cudaStream_t stream);

// out (N,OC) = inp (N,C) · weightᵀ + bias, weight (OC,C) as torch.nn.Linear, bias (OC) or
// null. With pre_gelu non-null: pre_gelu = that, and out = GELU_tanh(pre_gelu) (OC a
// multiple of 8). All bf16; the bias and GELU are applied to the fp32 accumulator.
absl::Status MatmulForward(Blas& blas, bf16* out, bf16* pre_gelu, const bf16* inp,
                           const bf16* weight, const bf16* bias, int N, int C, int OC,
                           cudaStream_t stream);

// Floats of scratch MatmulBackward needs for the bias gradient of N rows of OC.
size_t MatmulBackwardScratch(int N, int OC);

// dinp (N,C) bf16 is OVERWRITTEN with dout · weight, times GELU'(pre_gelu) elementwise when
// pre_gelu (N,C) is non-null (C a multiple of 8): the backward of a GELU that produced inp.
// dweight (OC,C) and dbias (OC, skipped when null) are fp32 and ACCUMULATED (+=); the bias
// gradient sums rows in a fixed order through `scratch` (no atomics).
absl::Status MatmulBackward(Blas& blas, bf16* dinp, float* dweight, float* dbias, float* scratch,
                            const bf16* dout, const bf16* inp, const bf16* weight,
                            const bf16* pre_gelu, int N, int C, int OC, cudaStream_t stream);

}  // namespace belay::kernels::cuda
