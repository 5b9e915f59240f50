// Causal attention, first version: head-major copies of q, k, v, batched cuBLASLt products
// and a causal softmax kernel (forward and backward), all deterministic.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"

namespace belay::kernels::cuda {
namespace {

// Element i of a head-major (B,NH,T,HS) tensor lives at this offset of a token-major tensor
// whose rows (one per b, t) hold `row` elements, head h's channels from h·HS.
__device__ __forceinline__ int64_t TokenMajorOffset(int64_t i, int T, int NH, int HS, int64_t row) {
  const int64_t d = i % HS;
  int64_t r = i / HS;
  const int64_t t = r % T;
  r /= T;
  const int64_t h = r % NH;
  const int64_t b = r / NH;
  return (b * T + t) * row + h * HS + d;
}

// qkv (B,T,3,NH,HS) → q, k, v each (B,NH,T,HS).
__global__ void SplitHeads(bf16* q, bf16* k, bf16* v, const bf16* qkv, int B, int T, int NH,
                           int HS) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= int64_t{B} * NH * T * HS) return;
  const int64_t C = int64_t{NH} * HS;
  const int64_t src = TokenMajorOffset(i, T, NH, HS, 3 * C);
  q[i] = qkv[src];
  k[i] = qkv[src + C];
  v[i] = qkv[src + 2 * C];
}

// The inverse: q, k, v (B,NH,T,HS) → out (B,T,3,NH,HS).
__global__ void JoinHeads3(bf16* out, const bf16* q, const bf16* k, const bf16* v, int B, int T,
                           int NH, int HS) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= int64_t{B} * NH * T * HS) return;
  const int64_t C = int64_t{NH} * HS;
  const int64_t dst = TokenMajorOffset(i, T, NH, HS, 3 * C);
  out[dst] = q[i];
  out[dst + C] = k[i];
  out[dst + 2 * C] = v[i];
}

// from (B,NH,T,HS) to (B,T,NH,HS), or back with `to_heads`.
__global__ void Transpose(bf16* dst, const bf16* src, int B, int T, int NH, int HS, bool to_heads) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= int64_t{B} * NH * T * HS) return;
  const int64_t j = TokenMajorOffset(i, T, NH, HS, int64_t{NH} * HS);
  if (to_heads) {
    dst[i] = src[j];
  } else {
    dst[j] = src[i];
  }
}

// Rows of (B·NH·T, T): row t of att keeps columns 0..t of the fp32 scores, softmax in fp32;
// the rest 0. One warp per row.
__global__ void CausalSoftmax(bf16* att, const float* preatt, int64_t rows, int T) {
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  const float* p = preatt + row * T;
  bf16* a = att + row * T;
  float mx = -INFINITY;
  for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, p[j]);
  mx = WarpMax(mx);
  float sum = 0.0f;
  for (int j = lane; j <= t; j += 32) sum += expf(p[j] - mx);
  sum = WarpSum(sum);
  const float inv = 1.0f / sum;
  for (int j = lane; j < T; j += 32) a[j] = ToBf16(j <= t ? expf(p[j] - mx) * inv : 0.0f);
}

// dpre = scale · att ⊙ (datt − Σ_j att·datt) on the causal part, 0 above; datt in fp32.
__global__ void CausalSoftmaxBackward(bf16* dpre, const float* datt, const bf16* att, int64_t rows,
                                      int T, float scale) {
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  const float* d = datt + row * T;
  const bf16* a = att + row * T;
  bf16* out = dpre + row * T;
  float dot = 0.0f;
  for (int j = lane; j <= t; j += 32) dot += ToFloat(a[j]) * d[j];
  dot = WarpSum(dot);
  for (int j = lane; j < T; j += 32) {
    out[j] = ToBf16(j <= t ? scale * ToFloat(a[j]) * (d[j] - dot) : 0.0f);
  }
}

absl::Status CheckShape(int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0 || C <= 0 || NH <= 0 || C % NH != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention shape B=", B, " T=", T, " C=", C, " NH=", NH));
  }
  if ((C / NH) % 8 != 0 || T % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention needs head size and T multiples of 8 (16-byte rows), got HS=", C / NH,
        " T=", T));
  }
  return absl::OkStatus();
}

// Per head, row-major X(r,c) = op(P)(r,k) · op(Q)(k,c), where op transposes when p_t / q_t;
// `batch` heads lie one after another in each tensor. cuBLASLt is column-major, so this is
// Xᵀ = op(Q)ᵀ · op(P)ᵀ, and a stored row-major matrix reads as its transpose.
Gemm RowMajorProduct(void* x, bool x_fp32, const bf16* p, bool p_t, const bf16* q, bool q_t, int r,
                     int c, int k, int batch, float alpha = 1.0f) {
  Gemm g;
  g.m = c;
  g.n = r;
  g.k = k;
  g.trans_a = q_t;
  g.a = q;
  g.lda = q_t ? k : c;
  g.stride_a = int64_t{k} * c;
  g.trans_b = p_t;
  g.b = p;
  g.ldb = p_t ? r : k;
  g.stride_b = int64_t{r} * k;
  g.d = x;
  g.d_fp32 = x_fp32;
  g.ldd = c;
  g.stride_d = int64_t{r} * c;
  g.batch = batch;
  g.alpha = alpha;
  return g;
}

constexpr int kThreads = 256;

}  // namespace

// Scratch layouts (bf16 elements; an fp32 array counts two): forward q, k, v, y (B·T·C each)
// then the fp32 scores (B·NH·T·T); backward q, k, v, dy, dq, dk, dv, then dpre (bf16) and
// the fp32 datt (B·NH·T·T each).
size_t AttentionForwardScratch(int B, int T, int C, int NH) {
  const size_t btc = static_cast<size_t>(B) * static_cast<size_t>(T) * static_cast<size_t>(C);
  const size_t bhtt = static_cast<size_t>(B) * static_cast<size_t>(NH) * static_cast<size_t>(T) *
                      static_cast<size_t>(T);
  return 4 * btc + 2 * bhtt;
}

size_t AttentionBackwardScratch(int B, int T, int C, int NH) {
  const size_t btc = static_cast<size_t>(B) * static_cast<size_t>(T) * static_cast<size_t>(C);
  const size_t bhtt = static_cast<size_t>(B) * static_cast<size_t>(NH) * static_cast<size_t>(T) *
                      static_cast<size_t>(T);
  return 7 * btc + 3 * bhtt;
}

absl::Status AttentionForward(Blas& blas, bf16* out, bf16* att, bf16* scratch, const bf16* qkv,
                              int B, int T, int C, int NH, cudaStream_t stream) {
  BELAY_RETURN_IF_NOT_OK(CheckShape(B, T, C, NH));
  if (out == nullptr || att == nullptr || scratch == nullptr || qkv == nullptr) {
    return absl::InvalidArgumentError("attention forward: a buffer is null");
  }
  const int HS = C / NH, BH = B * NH;
  const int64_t btc = int64_t{B} * T * C;
  bf16 *q = scratch, *k = q + btc, *v = k + btc, *y = v + btc;
  auto* preatt = reinterpret_cast<float*>(y + btc);
  SplitHeads<<<CeilDiv(btc, kThreads), kThreads, 0, stream>>>(q, k, v, qkv, B, T, NH, HS);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("SplitHeads");
  // preatt(T,T) = q · kᵀ / sqrt(HS) per head, in fp32 (bf16 scores would cost the softmax
  // about 2^-8 of relative accuracy per unit of score).
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  BELAY_RETURN_IF_NOT_OK(
      RunGemm(blas, RowMajorProduct(preatt, true, q, false, k, true, T, T, HS, BH, scale), stream));
  const int64_t rows = int64_t{BH} * T;
  CausalSoftmax<<<CeilDiv(rows, kThreads / 32), kThreads, 0, stream>>>(att, preatt, rows, T);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("CausalSoftmax");
  // y(T,HS) = att · v. The zeros above the diagonal make the full product causal.
  BELAY_RETURN_IF_NOT_OK(
      RunGemm(blas, RowMajorProduct(y, false, att, false, v, false, T, HS, T, BH), stream));
  Transpose<<<CeilDiv(btc, kThreads), kThreads, 0, stream>>>(out, y, B, T, NH, HS, false);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("Transpose");
  return absl::OkStatus();
}

absl::Status AttentionBackward(Blas& blas, bf16* dqkv, bf16* scratch, const bf16* dout,
                               const bf16* qkv, const bf16* att, int B, int T, int C, int NH,
                               cudaStream_t stream) {
  BELAY_RETURN_IF_NOT_OK(CheckShape(B, T, C, NH));
  if (dqkv == nullptr || scratch == nullptr || dout == nullptr || qkv == nullptr ||
      att == nullptr) {
    return absl::InvalidArgumentError("attention backward: a buffer is null");
  }
  const int HS = C / NH, BH = B * NH;
  const int64_t btc = int64_t{B} * T * C;
  bf16 *q = scratch, *k = q + btc, *v = k + btc, *dy = v + btc;
  bf16 *dq = dy + btc, *dk = dq + btc, *dv = dk + btc, *dpre = dv + btc;
  auto* datt = reinterpret_cast<float*>(dpre + int64_t{BH} * T * T);
  SplitHeads<<<CeilDiv(btc, kThreads), kThreads, 0, stream>>>(q, k, v, qkv, B, T, NH, HS);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("SplitHeads");
  Transpose<<<CeilDiv(btc, kThreads), kThreads, 0, stream>>>(dy, dout, B, T, NH, HS, true);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("Transpose");
  // datt(T,T) = dy · vᵀ; dv(T,HS) = attᵀ · dy.
  BELAY_RETURN_IF_NOT_OK(
      RunGemm(blas, RowMajorProduct(datt, true, dy, false, v, true, T, T, HS, BH), stream));
  BELAY_RETURN_IF_NOT_OK(
      RunGemm(blas, RowMajorProduct(dv, false, att, true, dy, false, T, HS, T, BH), stream));
  const int64_t rows = int64_t{BH} * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  CausalSoftmaxBackward<<<CeilDiv(rows, kThreads / 32), kThreads, 0, stream>>>(dpre, datt, att,
                                                                               rows, T, scale);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("CausalSoftmaxBackward");
  // dq(T,HS) = dpre · k; dk(T,HS) = dpreᵀ · q.
  BELAY_RETURN_IF_NOT_OK(
      RunGemm(blas, RowMajorProduct(dq, false, dpre, false, k, false, T, HS, T, BH), stream));
  BELAY_RETURN_IF_NOT_OK(
      RunGemm(blas, RowMajorProduct(dk, false, dpre, true, q, false, T, HS, T, BH), stream));
  JoinHeads3<<<CeilDiv(btc, kThreads), kThreads, 0, stream>>>(dqkv, dq, dk, dv, B, T, NH, HS);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("JoinHeads3");
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
