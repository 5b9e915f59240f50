// Fused causal attention (FlashAttention-2 manner) with WMMA bf16 tensor-core tiles.
// A block owns one (batch, head) and one 64-row tile; each of its 4 warps owns 16 rows of
// every 64×64 tile, so most steps need only warp-level synchronisation.
#include "kernels/cuda/flash_attention.h"

#include <mma.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"

namespace belay::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kHS = 64;    // head size
constexpr int kTile = 64;  // rows of a query or key tile
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kTileElems = kTile * kHS;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Copies rows t0..t0+63 of one head of q (part 0), k (1) or v (2) from qkv (B,T,3C), or of
// a (B,T,C) tensor when part < 0, into a 64×64 row-major tile: 16-byte loads, all threads.
__device__ __forceinline__ void LoadTile(bf16* tile, const bf16* src, int b, int h, int t0, int T,
                                         int C, int part) {
  const int64_t row_len = part < 0 ? C : 3 * int64_t{C};
  const int64_t col0 = (part < 0 ? 0 : int64_t{part} * C) + int64_t{h} * kHS;
  for (int v = threadIdx.x; v < kTileElems / 8; v += kThreads) {
    const int r = v / (kHS / 8), c = (v % (kHS / 8)) * 8;
    const bf16* p = src + (int64_t{b} * T + t0 + r) * row_len + col0 + c;
    StorePack<8>(tile + r * kHS + c, LoadPack<8>(p));
  }
}

// Writes a warp's 16 rows of a 64×64 fp32 tile to one head's columns (from col0) of rows
// t0.. of a (B,T,row_len) bf16 tensor.
__device__ __forceinline__ void StoreRows(bf16* dst, const float* tile, int warp, int b, int t0,
                                          int T, int64_t row_len, int64_t col0) {
  const int lane = threadIdx.x % 32;
  for (int r = warp * 16; r < warp * 16 + 16; ++r) {
    bf16* p = dst + (int64_t{b} * T + t0 + r) * row_len + col0;
    for (int c = lane; c < kHS; c += 32) p[c] = ToBf16(tile[r * kHS + c]);
  }
}

// S rows of this warp (16 × 64) = A(16 × 64) · Bᵀ where B is a 64×64 row-major tile (keys ×
// head dims): fp32 into s (ld 64).
__device__ __forceinline__ void RowsTimesTileT(float* s, const bf16* a, const bf16* bt,
                                               int warp) {
  for (int c = 0; c < kTile / 16; ++c) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < kHS / 16; ++kk) {
      FragA fa;
      FragBT fb;
      wmma::load_matrix_sync(fa, a + warp * 16 * kHS + kk * 16, kHS);
      wmma::load_matrix_sync(fb, bt + c * 16 * kHS + kk * 16, kHS);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(s + warp * 16 * kTile + c * 16, acc, kTile, wmma::mem_row_major);
  }
}

// acc[c] (this warp's 16 rows × 16c..16c+15) += A(16 × 64, rows of a) · B (64 × 64 row-major).
__device__ __forceinline__ void AccRowsTimesTile(FragC (&acc)[kHS / 16], const bf16* a,
                                                 const bf16* b, int warp) {
  for (int c = 0; c < kHS / 16; ++c) {
    for (int kk = 0; kk < kTile / 16; ++kk) {
      FragA fa;
      FragB fb;
      wmma::load_matrix_sync(fa, a + warp * 16 * kTile + kk * 16, kTile);
      wmma::load_matrix_sync(fb, b + kk * 16 * kHS + c * 16, kHS);
      wmma::mma_sync(acc[c], fa, fb, acc[c]);
    }
  }
}

// acc[c] (this warp's 16 rows of Aᵀ × 16c..) += Aᵀ · B, A a 64×64 row-major tile (queries ×
// keys, so Aᵀ has the keys as rows), B 64 × 64 row-major (queries × head dims).
__device__ __forceinline__ void AccTileTTimesTile(FragC (&acc)[kHS / 16], const bf16* a,
                                                  const bf16* b, int warp) {
  for (int c = 0; c < kHS / 16; ++c) {
    for (int kk = 0; kk < kTile / 16; ++kk) {
      FragAT fa;
      FragB fb;
      wmma::load_matrix_sync(fa, a + kk * 16 * kTile + warp * 16, kTile);
      wmma::load_matrix_sync(fb, b + kk * 16 * kHS + c * 16, kHS);
      wmma::mma_sync(acc[c], fa, fb, acc[c]);
    }
  }
}

// Shared memory of the forward kernel (dynamic, 64.5 KiB).
struct ForwardSmem {
  bf16 q[kTileElems], k[kTileElems], v[kTileElems], p[kTile * kTile];
  float s[kTile * kTile], o[kTileElems];
  float m[kTile], l[kTile];
};

__global__ void __launch_bounds__(kThreads)
    FlashForwardKernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH, float scale) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<ForwardSmem*>(smem_raw);
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q0 = qt * kTile;
  LoadTile(sm.q, qkv, b, h, q0, T, C, 0);
  for (int i = threadIdx.x; i < kTileElems; i += kThreads) sm.o[i] = 0.0f;
  if (threadIdx.x < kTile) {
    sm.m[threadIdx.x] = -INFINITY;
    sm.l[threadIdx.x] = 0.0f;
  }
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();  // everyone is done with the previous k, v tiles
    LoadTile(sm.k, qkv, b, h, k0, T, C, 1);
    LoadTile(sm.v, qkv, b, h, k0, T, C, 2);
    __syncthreads();
    RowsTimesTileT(sm.s, sm.q, sm.k, warp);
    __syncwarp();
    // Online softmax over this warp's rows: lanes take columns lane and lane + 32.
    for (int r = warp * 16; r < warp * 16 + 16; ++r) {
      const int tq = q0 + r;
      float x[2];
      float mx = -INFINITY;
      for (int j = 0; j < 2; ++j) {
        const int col = lane + 32 * j;
        x[j] = k0 + col <= tq ? sm.s[r * kTile + col] * scale : -INFINITY;
        mx = fmaxf(mx, x[j]);
      }
      mx = WarpMax(mx);
      const float m_old = sm.m[r];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      for (int j = 0; j < 2; ++j) {
        const float p = expf(x[j] - m_new);  // 0 for masked columns
        sm.p[r * kTile + lane + 32 * j] = ToBf16(p);
        sum += p;
      }
      sum = WarpSum(sum);
      const float alpha = expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
      for (int c = lane; c < kHS; c += 32) sm.o[r * kHS + c] *= alpha;
      __syncwarp();
      if (lane == 0) {
        sm.l[r] = sm.l[r] * alpha + sum;
        sm.m[r] = m_new;
      }
    }
    __syncwarp();
    // o rows += p · v, through s as staging.
    FragC acc[kHS / 16];
    for (auto& a : acc) wmma::fill_fragment(a, 0.0f);
    AccRowsTimesTile(acc, sm.p, sm.v, warp);
    for (int c = 0; c < kHS / 16; ++c) {
      wmma::store_matrix_sync(sm.s + warp * 16 * kTile + c * 16, acc[c], kTile,
                              wmma::mem_row_major);
    }
    __syncwarp();
    for (int i = lane; i < 16 * kHS; i += 32) {
      const int r = warp * 16 + i / kHS, c = i % kHS;
      sm.o[r * kHS + c] += sm.s[r * kTile + c];
    }
    __syncwarp();
  }
  const int lane_rows = warp * 16;
  for (int r = lane_rows; r < lane_rows + 16; ++r) {
    const float inv = 1.0f / sm.l[r];
    bf16* p = out + (int64_t{b} * T + q0 + r) * C + int64_t{h} * kHS;
    for (int c = lane; c < kHS; c += 32) p[c] = ToBf16(sm.o[r * kHS + c] * inv);
    if (lane == 0) lse[int64_t{bh} * T + q0 + r] = sm.m[r] + logf(sm.l[r]);
  }
}

// delta[bh, t] = Σ_d dout · out over the head's channels: one warp per row.
__global__ void FlashDeltaKernel(float* delta, const bf16* dout, const bf16* out, int B, int T,
                                 int C, int NH) {
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= int64_t{B} * NH * T) return;
  const int64_t t = row % T, bh = row / T, b = bh / NH, h = bh % NH;
  const int64_t base = (b * T + t) * C + h * kHS;
  float s = 0.0f;
  for (int c = lane; c < kHS; c += 32) s += ToFloat(dout[base + c]) * ToFloat(out[base + c]);
  s = WarpSum(s);
  if (lane == 0) delta[row] = s;
}

// Shared memory of the backward kernels (dynamic, 66 KiB).
struct BackwardSmem {
  bf16 q[kTileElems], k[kTileElems], v[kTileElems], dout[kTileElems];
  bf16 p[kTile * kTile], ds[kTile * kTile];
  float s[kTile * kTile];
  float lse[kTile], delta[kTile];
};

// For this warp's 16 query rows of the (q tile at q0, k tile at k0) pair: p = softmax
// probabilities (recomputed from lse), ds = p ⊙ (dout·vᵀ − delta) · scale, both bf16 in smem.
__device__ __forceinline__ void ProbsAndScoreGrads(BackwardSmem& sm, int warp, int q0, int k0,
                                                   float scale) {
  const int lane = threadIdx.x % 32;
  RowsTimesTileT(sm.s, sm.q, sm.k, warp);
  __syncwarp();
  float p[16][2];
  for (int i = 0; i < 16; ++i) {
    const int r = warp * 16 + i;
    for (int j = 0; j < 2; ++j) {
      const int col = lane + 32 * j;
      p[i][j] = k0 + col <= q0 + r ? expf(sm.s[r * kTile + col] * scale - sm.lse[r]) : 0.0f;
      sm.p[r * kTile + col] = ToBf16(p[i][j]);
    }
  }
  __syncwarp();
  RowsTimesTileT(sm.s, sm.dout, sm.v, warp);  // dP
  __syncwarp();
  for (int i = 0; i < 16; ++i) {
    const int r = warp * 16 + i;
    for (int j = 0; j < 2; ++j) {
      const int col = lane + 32 * j;
      sm.ds[r * kTile + col] = ToBf16(p[i][j] * (sm.s[r * kTile + col] - sm.delta[r]) * scale);
    }
  }
  __syncwarp();
}

__device__ __forceinline__ void LoadRowStats(BackwardSmem& sm, const float* lse,
                                             const float* delta, int64_t bh, int T, int q0) {
  if (threadIdx.x < kTile) {
    sm.lse[threadIdx.x] = lse[bh * T + q0 + threadIdx.x];
    sm.delta[threadIdx.x] = delta[bh * T + q0 + threadIdx.x];
  }
}

// dk, dv for one key tile: loops over the query tiles at or after it.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardKVKernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                          const float* delta, int T, int C, int NH, float scale) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<BackwardSmem*>(smem_raw);
  const int kt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / 32;
  const int k0 = kt * kTile;
  LoadTile(sm.k, qkv, b, h, k0, T, C, 1);
  LoadTile(sm.v, qkv, b, h, k0, T, C, 2);
  FragC dk[kHS / 16], dv[kHS / 16];
  for (int c = 0; c < kHS / 16; ++c) {
    wmma::fill_fragment(dk[c], 0.0f);
    wmma::fill_fragment(dv[c], 0.0f);
  }
  const int n_tiles = T / kTile;
  for (int qt = kt; qt < n_tiles; ++qt) {
    const int q0 = qt * kTile;
    __syncthreads();  // everyone is done with the previous q, dout, p, ds
    LoadTile(sm.q, qkv, b, h, q0, T, C, 0);
    LoadTile(sm.dout, dout, b, h, q0, T, C, -1);
    LoadRowStats(sm, lse, delta, bh, T, q0);
    __syncthreads();
    ProbsAndScoreGrads(sm, warp, q0, k0, scale);
    __syncthreads();  // dv and dk read every query row of p and ds
    AccTileTTimesTile(dv, sm.p, sm.dout, warp);
    AccTileTTimesTile(dk, sm.ds, sm.q, warp);
  }
  __syncthreads();
  for (int c = 0; c < kHS / 16; ++c) {
    wmma::store_matrix_sync(sm.s + warp * 16 * kTile + c * 16, dk[c], kTile, wmma::mem_row_major);
  }
  __syncwarp();
  StoreRows(dqkv, sm.s, warp, b, k0, T, 3 * int64_t{C}, int64_t{C} + int64_t{h} * kHS);
  __syncwarp();
  for (int c = 0; c < kHS / 16; ++c) {
    wmma::store_matrix_sync(sm.s + warp * 16 * kTile + c * 16, dv[c], kTile, wmma::mem_row_major);
  }
  __syncwarp();
  StoreRows(dqkv, sm.s, warp, b, k0, T, 3 * int64_t{C}, 2 * int64_t{C} + int64_t{h} * kHS);
}

// dq for one query tile: loops over the key tiles at or before it.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardQKernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                         const float* delta, int T, int C, int NH, float scale) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<BackwardSmem*>(smem_raw);
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int warp = threadIdx.x / 32;
  const int q0 = qt * kTile;
  LoadTile(sm.q, qkv, b, h, q0, T, C, 0);
  LoadTile(sm.dout, dout, b, h, q0, T, C, -1);
  LoadRowStats(sm, lse, delta, bh, T, q0);
  FragC dq[kHS / 16];
  for (auto& a : dq) wmma::fill_fragment(a, 0.0f);
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();  // everyone is done with the previous k, v
    LoadTile(sm.k, qkv, b, h, k0, T, C, 1);
    LoadTile(sm.v, qkv, b, h, k0, T, C, 2);
    __syncthreads();
    ProbsAndScoreGrads(sm, warp, q0, k0, scale);
    AccRowsTimesTile(dq, sm.ds, sm.k, warp);  // this warp's rows of ds only
  }
  for (int c = 0; c < kHS / 16; ++c) {
    wmma::store_matrix_sync(sm.s + warp * 16 * kTile + c * 16, dq[c], kTile, wmma::mem_row_major);
  }
  __syncwarp();
  StoreRows(dqkv, sm.s, warp, b, q0, T, 3 * int64_t{C}, int64_t{h} * kHS);
}

absl::Status CheckShape(int B, int T, int C, int NH) {
  if (B <= 0 || !FlashAttentionSupports(T, C, NH)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flash attention needs head size 64 and T a multiple of 64, got B=", B, " T=", T,
        " C=", C, " NH=", NH));
  }
  if (int64_t{B} * NH > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("flash attention: B·NH = ", int64_t{B} * NH,
                                                   " exceeds the grid's y limit 65535"));
  }
  return absl::OkStatus();
}

template <typename Kernel>
absl::Status AllowSmem(Kernel kernel, size_t bytes) {
  BELAY_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  return absl::OkStatus();
}

}  // namespace

bool FlashAttentionSupports(int T, int C, int NH) {
  return NH > 0 && C == NH * kHS && T > 0 && T % kTile == 0;
}

size_t FlashAttentionBackwardScratch(int B, int T, int NH) {
  return static_cast<size_t>(B) * static_cast<size_t>(NH) * static_cast<size_t>(T);
}

absl::Status FlashAttentionForward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C,
                                   int NH, cudaStream_t stream) {
  BELAY_RETURN_IF_NOT_OK(CheckShape(B, T, C, NH));
  if (out == nullptr || lse == nullptr || qkv == nullptr) {
    return absl::InvalidArgumentError("flash attention forward: a buffer is null");
  }
  const size_t smem = sizeof(ForwardSmem);
  BELAY_RETURN_IF_NOT_OK(AllowSmem(FlashForwardKernel, smem));
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHS));
  FlashForwardKernel<<<dim3(T / kTile, B * NH), kThreads, smem, stream>>>(out, lse, qkv, T, C, NH,
                                                                       scale);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashForwardKernel");
  return absl::OkStatus();
}

absl::Status FlashAttentionBackward(bf16* dqkv, float* scratch, const bf16* dout,
                                    const bf16* qkv, const bf16* out, const float* lse, int B,
                                    int T, int C, int NH, cudaStream_t stream) {
  BELAY_RETURN_IF_NOT_OK(CheckShape(B, T, C, NH));
  if (dqkv == nullptr || scratch == nullptr || dout == nullptr || qkv == nullptr ||
      out == nullptr || lse == nullptr) {
    return absl::InvalidArgumentError("flash attention backward: a buffer is null");
  }
  const int64_t rows = int64_t{B} * NH * T;
  FlashDeltaKernel<<<CeilDiv(rows, 8), 256, 0, stream>>>(scratch, dout, out, B, T, C, NH);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashDeltaKernel");
  const size_t smem = sizeof(BackwardSmem);
  BELAY_RETURN_IF_NOT_OK(AllowSmem(FlashBackwardKVKernel, smem));
  BELAY_RETURN_IF_NOT_OK(AllowSmem(FlashBackwardQKernel, smem));
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHS));
  const dim3 grid(T / kTile, B * NH);
  FlashBackwardKVKernel<<<grid, kThreads, smem, stream>>>(dqkv, qkv, dout, lse, scratch, T, C,
                                                          NH, scale);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashBackwardKVKernel");
  FlashBackwardQKernel<<<grid, kThreads, smem, stream>>>(dqkv, qkv, dout, lse, scratch, T, C, NH,
                                                         scale);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashBackwardQKernel");
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
