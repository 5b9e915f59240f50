// Linear layers through cuBLASLt: bias and GELU in the epilogue, fp32 weight gradients, and a
// deterministic bias-gradient reduction.
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/matmul.h"

namespace belay::kernels::cuda {

absl::StatusOr<std::unique_ptr<Blas>> Blas::Create(size_t workspace_bytes) {
  std::unique_ptr<Blas> blas(new Blas());
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&blas->handle_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMalloc(&blas->workspace_, workspace_bytes));
  blas->workspace_bytes_ = workspace_bytes;
  return blas;
}

Blas::~Blas() {
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

namespace {

// The largest power of two (up to 256) dividing the address: cuBLASLt assumes 256-byte
// alignment unless told otherwise, and picks kernels that rely on it.
uint32_t Alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// Owns the descriptors of one cuBLASLt call.
struct LtCall {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtCall() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

absl::Status MakeLayout(cublasLtMatrixLayout_t* layout, cudaDataType type, int64_t rows,
                        int64_t cols, int64_t ld, int batch, int64_t stride) {
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(layout, type, static_cast<uint64_t>(rows),
                                                          static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = batch;
    BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
        *layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
        *layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return absl::OkStatus();
}

// Column sums of dout (N,OC) over row chunks of kBiasRows: scratch[chunk][oc]. Blocks of
// 32 columns × 8 row lanes; the lanes' partials are added in lane order.
constexpr int kBiasRows = 256;
constexpr int kBiasLanes = 8;

__global__ void BiasGradPartials(float* scratch, const bf16* dout, int N, int OC) {
  __shared__ float part[kBiasLanes][32];
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int lane = threadIdx.y;
  const int64_t row0 = int64_t{blockIdx.y} * kBiasRows;
  float s = 0.0f;
  if (col < OC) {
    for (int64_t r = row0 + lane; r < row0 + kBiasRows && r < N; r += kBiasLanes) {
      s += ToFloat(dout[r * OC + col]);
    }
  }
  part[lane][threadIdx.x] = s;
  __syncthreads();
  if (lane == 0 && col < OC) {
    float total = 0.0f;
    for (int i = 0; i < kBiasLanes; ++i) total += part[i][threadIdx.x];
    scratch[int64_t{blockIdx.y} * OC + col] = total;
  }
}

__global__ void BiasGradSum(float* dbias, const float* scratch, int chunks, int OC) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= OC) return;
  float total = 0.0f;
  for (int c = 0; c < chunks; ++c) total += scratch[int64_t{c} * OC + col];
  dbias[col] += total;
}

int BiasChunks(int N) { return static_cast<int>(CeilDiv(N, kBiasRows)); }

}  // namespace

absl::Status RunGemm(Blas& blas, const Gemm& g, cudaStream_t stream) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0 || g.batch <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm shape m=", g.m, " n=", g.n, " k=", g.k, " batch=", g.batch));
  }
  if (g.a == nullptr || g.b == nullptr || g.d == nullptr) {
    return absl::InvalidArgumentError("gemm operand is null");
  }
  LtCall call;
  BELAY_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&call.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  BELAY_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  BELAY_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &g.epilogue, sizeof(g.epilogue)));
  }
  if (g.bias != nullptr) {
    BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        call.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
  }
  if (g.aux != nullptr) {
    BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof(g.aux)));
    BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &g.aux_ld, sizeof(g.aux_ld)));
  }
  // Stored shapes (before op): A is m×k or k×m, B is k×n or n×k.
  BELAY_RETURN_IF_NOT_OK(MakeLayout(&call.la, CUDA_R_16BF, g.trans_a ? g.k : g.m,
                                    g.trans_a ? g.m : g.k, g.lda, g.batch, g.stride_a));
  BELAY_RETURN_IF_NOT_OK(MakeLayout(&call.lb, CUDA_R_16BF, g.trans_b ? g.n : g.k,
                                    g.trans_b ? g.k : g.n, g.ldb, g.batch, g.stride_b));
  BELAY_RETURN_IF_NOT_OK(MakeLayout(&call.ld, g.d_fp32 ? CUDA_R_32F : CUDA_R_16BF, g.m, g.n, g.ldd,
                                    g.batch, g.stride_d));

  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&call.pref));
  const uint64_t ws = blas.workspace_bytes();
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      call.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t align_a = Alignment(g.a), align_b = Alignment(g.b), align_d = Alignment(g.d);
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      call.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(
      blas.handle(), call.desc, call.la, call.lb, call.ld, call.ld, call.pref, 1, &result, &found));
  if (found == 0) {
    return absl::UnimplementedError(absl::StrCat("cuBLASLt has no algorithm for m=", g.m,
                                                 " n=", g.n, " k=", g.k, " batch=", g.batch,
                                                 " epilogue=", static_cast<int>(g.epilogue)));
  }
  BELAY_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(blas.handle(), call.desc, &g.alpha, g.a, call.la, g.b,
                                              call.lb, &g.beta, g.d, call.ld, g.d, call.ld,
                                              &result.algo, blas.workspace(), ws, stream));
  return absl::OkStatus();
}

absl::Status MatmulForward(Blas& blas, bf16* out, bf16* pre_gelu, const bf16* inp,
                           const bf16* weight, const bf16* bias, int N, int C, int OC,
                           cudaStream_t stream) {
  if (N <= 0 || C <= 0 || OC <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("matmul shape N=", N, " C=", C, " OC=", OC));
  }
  if (out == nullptr || inp == nullptr || weight == nullptr) {
    return absl::InvalidArgumentError("matmul: out, inp and weight must not be null");
  }
  if (pre_gelu != nullptr && OC % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("matmul with GELU needs OC % 8 == 0, got ", OC));
  }
  // Row-major out(N,OC) = inp · Wᵀ is column-major outᵀ(OC,N) = W(OC,C) · inpᵀ(C,N), where the
  // stored W reads as a column-major C×OC matrix (hence op T) and inp as C×N.
  Gemm g;
  g.trans_a = true;
  g.m = OC;
  g.n = N;
  g.k = C;
  g.a = weight;
  g.lda = C;
  g.b = inp;
  g.ldb = C;
  g.d = out;
  g.ldd = OC;
  if (pre_gelu != nullptr) {
    g.epilogue = bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    g.aux = pre_gelu;
    g.aux_ld = OC;
  } else if (bias != nullptr) {
    g.epilogue = CUBLASLT_EPILOGUE_BIAS;
  }
  g.bias = bias;
  return RunGemm(blas, g, stream);
}

size_t MatmulBackwardScratch(int N, int OC) {
  return N <= 0 || OC <= 0 ? 0 : static_cast<size_t>(BiasChunks(N)) * static_cast<size_t>(OC);
}

absl::Status MatmulBackward(Blas& blas, bf16* dinp, float* dweight, float* dbias, float* scratch,
                            const bf16* dout, const bf16* inp, const bf16* weight,
                            const bf16* pre_gelu, int N, int C, int OC, cudaStream_t stream) {
  if (N <= 0 || C <= 0 || OC <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("matmul shape N=", N, " C=", C, " OC=", OC));
  }
  if (dinp == nullptr || dweight == nullptr || dout == nullptr || inp == nullptr ||
      weight == nullptr) {
    return absl::InvalidArgumentError(
        "matmul backward: dinp, dweight, dout, inp, weight must not be null");
  }
  if (dbias != nullptr && scratch == nullptr) {
    return absl::InvalidArgumentError("matmul backward: a bias gradient needs scratch");
  }
  if (pre_gelu != nullptr && C % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("matmul backward through GELU needs C % 8 == 0, got ", C));
  }
  // dinpᵀ(C,N) = Wᵀ(C,OC) · doutᵀ(OC,N): the stored W reads as C×OC, dout as OC×N.
  Gemm gi;
  gi.m = C;
  gi.n = N;
  gi.k = OC;
  gi.a = weight;
  gi.lda = C;
  gi.b = dout;
  gi.ldb = OC;
  gi.d = dinp;
  gi.ldd = C;
  if (pre_gelu != nullptr) {
    gi.epilogue = CUBLASLT_EPILOGUE_DGELU;
    gi.aux = const_cast<bf16*>(pre_gelu);  // read only under DGELU
    gi.aux_ld = C;
  }
  BELAY_RETURN_IF_NOT_OK(RunGemm(blas, gi, stream));

  // dWᵀ(C,OC) += inpᵀ(C,N) · dout(N,OC): the stored dout reads as OC×N, hence op T.
  Gemm gw;
  gw.trans_b = true;
  gw.m = C;
  gw.n = OC;
  gw.k = N;
  gw.a = inp;
  gw.lda = C;
  gw.b = dout;
  gw.ldb = OC;
  gw.d = dweight;
  gw.d_fp32 = true;
  gw.ldd = C;
  gw.beta = 1.0f;
  BELAY_RETURN_IF_NOT_OK(RunGemm(blas, gw, stream));

  if (dbias != nullptr) {
    const int chunks = BiasChunks(N);
    BiasGradPartials<<<dim3(CeilDiv(OC, 32), static_cast<unsigned>(chunks)), dim3(32, kBiasLanes),
                       0, stream>>>(scratch, dout, N, OC);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("BiasGradPartials");
    BiasGradSum<<<CeilDiv(OC, 256), 256, 0, stream>>>(dbias, scratch, chunks, OC);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("BiasGradSum");
  }
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
