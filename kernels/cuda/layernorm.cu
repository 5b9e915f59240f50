// LayerNorm on the GPU, fused with the residual add before it; backward without atomics.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/layernorm.h"

namespace belay::kernels::cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kThreads = 256;  // row kernels: one warp per row
constexpr int kRowsPerBlock = kThreads / 32;
constexpr int kRowsPerChunk = 128;  // rows summed into one partial of dweight/dbias
constexpr int kChunkRows = 8;       // threadIdx.y extent of the column kernels

template <int kVec>
__device__ __forceinline__ void LoadFloats(float (&x)[kVec], const bf16* p) {
  const Pack<bf16, kVec> v = LoadPack<kVec>(p);
#pragma unroll
  for (int k = 0; k < kVec; ++k) x[k] = ToFloat(v.v[k]);
}

// x = a + b rounded to bf16 (b non-null), or a; also stores the rounded sum when `store`.
template <int kVec>
__device__ __forceinline__ void LoadInput(float (&x)[kVec], const bf16* a, const bf16* b,
                                          bf16* residual, int64_t i, bool store) {
  LoadFloats<kVec>(x, a + i);
  if (b == nullptr) return;
  float y[kVec];
  LoadFloats<kVec>(y, b + i);
  Pack<bf16, kVec> r;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    r.v[k] = ToBf16(x[k] + y[k]);
    x[k] = ToFloat(r.v[k]);
  }
  if (store) StorePack<kVec>(residual + i, r);
}

// One warp per row; the row is read three times (sum, squared deviations, output), the later
// reads mostly from L1.
template <int kVec>
__global__ void ForwardKernel(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* a,
                              const bf16* b, const bf16* weight, const bf16* bias, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (row >= N) return;  // whole warps only: no block-wide synchronisation below
  const int packs = C / kVec;
  const int64_t base = int64_t{row} * C;
  float x[kVec];
  float sum = 0;
  for (int p = lane; p < packs; p += 32) {
    LoadInput<kVec>(x, a, b, residual, base + p * kVec, true);
    for (int k = 0; k < kVec; ++k) sum += x[k];
  }
  const float m = WarpSum(sum) / static_cast<float>(C);
  float sq = 0;
  for (int p = lane; p < packs; p += 32) {
    LoadInput<kVec>(x, a, b, residual, base + p * kVec, false);
    for (int k = 0; k < kVec; ++k) sq += (x[k] - m) * (x[k] - m);
  }
  const float s = 1.0f / sqrtf(WarpSum(sq) / static_cast<float>(C) + kEps);
  for (int p = lane; p < packs; p += 32) {
    float w[kVec], bi[kVec];
    LoadInput<kVec>(x, a, b, residual, base + p * kVec, false);
    LoadFloats<kVec>(w, weight + p * kVec);
    LoadFloats<kVec>(bi, bias + p * kVec);
    Pack<bf16, kVec> o;
    for (int k = 0; k < kVec; ++k) o.v[k] = ToBf16((x[k] - m) * s * w[k] + bi[k]);
    StorePack<kVec>(out + base + p * kVec, o);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// dinp, one warp per row: read the existing bf16 value, add in fp32, round once.
template <int kVec>
__global__ void BackwardInputKernel(bf16* dinp, const bf16* dout, const bf16* inp,
                                    const bf16* weight, const float* mean, const float* rstd, int N,
                                    int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (row >= N) return;
  const int packs = C / kVec;
  const int64_t base = int64_t{row} * C;
  const float m = mean[row], s = rstd[row];
  float g[kVec], x[kVec], w[kVec];
  float dm = 0, dnm = 0;
  for (int p = lane; p < packs; p += 32) {
    LoadFloats<kVec>(g, dout + base + p * kVec);
    LoadFloats<kVec>(x, inp + base + p * kVec);
    LoadFloats<kVec>(w, weight + p * kVec);
    for (int k = 0; k < kVec; ++k) {
      const float dnorm = w[k] * g[k];
      dm += dnorm;
      dnm += dnorm * (x[k] - m) * s;
    }
  }
  dm = WarpSum(dm) / static_cast<float>(C);
  dnm = WarpSum(dnm) / static_cast<float>(C);
  for (int p = lane; p < packs; p += 32) {
    float d[kVec];
    LoadFloats<kVec>(g, dout + base + p * kVec);
    LoadFloats<kVec>(x, inp + base + p * kVec);
    LoadFloats<kVec>(w, weight + p * kVec);
    LoadFloats<kVec>(d, dinp + base + p * kVec);
    Pack<bf16, kVec> o;
    for (int k = 0; k < kVec; ++k) {
      const float norm = (x[k] - m) * s;
      o.v[k] = ToBf16(d[k] + (w[k] * g[k] - dm - norm * dnm) * s);
    }
    StorePack<kVec>(dinp + base + p * kVec, o);
  }
}

// Partial dweight/dbias of one chunk of kRowsPerChunk rows for 32·kVec channels. Block
// (32, kChunkRows): thread (x, y) sums rows y, y + kChunkRows, ... of the chunk in order; the
// kChunkRows sums are then added in order of y. scratch[chunk][0..C) dweight, [C..2C) dbias.
template <int kVec>
__global__ void BackwardPartialKernel(float* scratch, const bf16* dout, const bf16* inp,
                                      const float* mean, const float* rstd, int N, int C) {
  constexpr int kTile = 32 * kVec;
  __shared__ float part[2][kChunkRows][kTile];
  const int c0 = (blockIdx.x * 32 + threadIdx.x) * kVec;
  const int r_end = min(N, static_cast<int>(blockIdx.y + 1) * kRowsPerChunk);
  float dw[kVec] = {}, db[kVec] = {};
  if (c0 < C) {
    for (int r = blockIdx.y * kRowsPerChunk + threadIdx.y; r < r_end; r += kChunkRows) {
      float g[kVec], x[kVec];
      LoadFloats<kVec>(g, dout + int64_t{r} * C + c0);
      LoadFloats<kVec>(x, inp + int64_t{r} * C + c0);
      const float m = mean[r], s = rstd[r];
      for (int k = 0; k < kVec; ++k) {
        dw[k] += (x[k] - m) * s * g[k];
        db[k] += g[k];
      }
    }
  }
  for (int k = 0; k < kVec; ++k) {
    part[0][threadIdx.y][threadIdx.x * kVec + k] = dw[k];
    part[1][threadIdx.y][threadIdx.x * kVec + k] = db[k];
  }
  __syncthreads();
  const int tid = threadIdx.y * 32 + threadIdx.x;
  for (int j = tid; j < 2 * kTile; j += 32 * kChunkRows) {
    const int which = j / kTile, cc = j % kTile;
    const int c = blockIdx.x * kTile + cc;
    if (c >= C) continue;
    float total = 0;
    for (int y = 0; y < kChunkRows; ++y) total += part[which][y][cc];
    scratch[int64_t{blockIdx.y} * 2 * C + int64_t{which} * C + c] = total;
  }
}

// Sums the chunks' partials for 32 of the 2C outputs: warp y takes chunks y, y + kChunkRows, ...
// in order, then the kChunkRows sums are added in order of y and added to dweight / dbias.
__global__ void BackwardSumKernel(float* dweight, float* dbias, const float* scratch, int chunks,
                                  int C) {
  __shared__ float part[kChunkRows][32];
  const int j = blockIdx.x * 32 + threadIdx.x;
  float sum = 0;
  if (j < 2 * C) {
    for (int k = threadIdx.y; k < chunks; k += kChunkRows) sum += scratch[int64_t{k} * 2 * C + j];
  }
  part[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y != 0 || j >= 2 * C) return;
  float total = 0;
  for (int y = 0; y < kChunkRows; ++y) total += part[y][threadIdx.x];
  float* dst = j < C ? dweight + j : dbias + (j - C);
  *dst += total;
}

template <typename... Args>
absl::Status Invalid(const char* op, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", args...));
}

absl::Status CheckShape(const char* op, int N, int C) {
  if (N <= 0) return Invalid(op, "N must be > 0, got ", N);
  if (C <= 0) return Invalid(op, "C must be > 0, got ", C);
  return absl::OkStatus();
}

int Chunks(int N) { return static_cast<int>(CeilDiv(N, kRowsPerChunk)); }

}  // namespace

absl::Status ResidualLayerNormForward(bf16* residual, bf16* out, float* mean, float* rstd,
                                      const bf16* a, const bf16* b, const bf16* weight,
                                      const bf16* bias, int N, int C, cudaStream_t stream) {
  constexpr const char* kOp = "ResidualLayerNormForward";
  if (absl::Status st = CheckShape(kOp, N, C); !st.ok()) return st;
  if (out == nullptr) return Invalid(kOp, "out is null");
  if (mean == nullptr || rstd == nullptr) return Invalid(kOp, "mean or rstd is null");
  if (a == nullptr) return Invalid(kOp, "a is null");
  if (weight == nullptr || bias == nullptr) return Invalid(kOp, "weight or bias is null");
  if (b != nullptr && residual == nullptr) return Invalid(kOp, "residual is null but b is not");
  const bool vec = C % 8 == 0 && IsAligned(out, 16) && IsAligned(a, 16) && IsAligned(b, 16) &&
                   IsAligned(residual, 16) && IsAligned(weight, 16) && IsAligned(bias, 16);
  const unsigned blocks = CeilDiv(N, kRowsPerBlock);
  if (vec) {
    ForwardKernel<8>
        <<<blocks, kThreads, 0, stream>>>(residual, out, mean, rstd, a, b, weight, bias, N, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ForwardKernel<8>);
  } else {
    ForwardKernel<1>
        <<<blocks, kThreads, 0, stream>>>(residual, out, mean, rstd, a, b, weight, bias, N, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ForwardKernel<1>);
  }
  return absl::OkStatus();
}

size_t LayerNormBackwardScratch(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  return static_cast<size_t>(Chunks(N)) * 2 * static_cast<size_t>(C);
}

absl::Status LayerNormBackward(bf16* dinp, float* dweight, float* dbias, float* scratch,
                               const bf16* dout, const bf16* inp, const bf16* weight,
                               const float* mean, const float* rstd, int N, int C,
                               cudaStream_t stream) {
  constexpr const char* kOp = "LayerNormBackward";
  if (absl::Status st = CheckShape(kOp, N, C); !st.ok()) return st;
  if (Chunks(N) > 65535) return Invalid(kOp, "N too large for the grid, got ", N);
  if (dinp == nullptr) return Invalid(kOp, "dinp is null");
  if (dweight == nullptr || dbias == nullptr) return Invalid(kOp, "dweight or dbias is null");
  if (scratch == nullptr) return Invalid(kOp, "scratch is null");
  if (dout == nullptr || inp == nullptr) return Invalid(kOp, "dout or inp is null");
  if (weight == nullptr) return Invalid(kOp, "weight is null");
  if (mean == nullptr || rstd == nullptr) return Invalid(kOp, "mean or rstd is null");
  const bool vec = C % 8 == 0 && IsAligned(dinp, 16) && IsAligned(dout, 16) && IsAligned(inp, 16) &&
                   IsAligned(weight, 16);
  const unsigned row_blocks = CeilDiv(N, kRowsPerBlock);
  const dim3 col_threads(32, kChunkRows);
  if (vec) {
    BackwardInputKernel<8>
        <<<row_blocks, kThreads, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardInputKernel<8>);
    BackwardPartialKernel<8><<<dim3(CeilDiv(C, 32 * 8), Chunks(N)), col_threads, 0, stream>>>(
        scratch, dout, inp, mean, rstd, N, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardPartialKernel<8>);
  } else {
    BackwardInputKernel<1>
        <<<row_blocks, kThreads, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardInputKernel<1>);
    BackwardPartialKernel<1><<<dim3(CeilDiv(C, 32), Chunks(N)), col_threads, 0, stream>>>(
        scratch, dout, inp, mean, rstd, N, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardPartialKernel<1>);
  }
  BackwardSumKernel<<<CeilDiv(2 * int64_t{C}, 32), col_threads, 0, stream>>>(dweight, dbias,
                                                                             scratch, Chunks(N), C);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(BackwardSumKernel);
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
