// Fused causal attention (FlashAttention-2 manner) with bf16 mma.sync tensor-core products.
// A block owns one (batch, head) and one 64-row tile; each of its 4 warps owns 16 rows and
// keeps its scores, probabilities and accumulators in registers. Shared memory only stages
// the 64×64 tiles the warps multiply against (cp.async, double-buffered).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/flash_attention.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kHS = 64;    // head size
constexpr int kTile = 64;  // rows of a query or key tile
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
// Staged rows are padded by 16 bytes so the 8 rows an ldmatrix reads fall in distinct banks.
constexpr int kLd = kHS + 8;
constexpr int kTileElems = kTile * kLd;
constexpr float kLog2e = 1.4426950408889634f;

// A warp's 16×64 fp32 product in mma C fragments: acc[n][e] is row g + 8·(e / 2), column
// 8n + 2·q + e % 2 of it, where g = lane / 4 and q = lane % 4.
using Acc = float[kHS / 8][4];

__device__ __forceinline__ int AccRow(int e) { return (threadIdx.x % 32) / 4 + 8 * (e / 2); }
__device__ __forceinline__ int AccCol(int n, int e) {
  return 8 * n + 2 * (threadIdx.x % 4) + e % 2;
}

// This lane's ldmatrix address (in elements) for the 16×16 block at (r0, c0) of a staged tile,
// quarters in the order (r0, c0), (r0 + 8, c0), (r0, c0 + 8), (r0 + 8, c0 + 8): the A
// fragment of row-major data, or with .trans the B fragments of two n-blocks of [k][n] data.
__device__ __forceinline__ int RowsFirst(int r0, int c0) {
  const int lane = threadIdx.x % 32;
  return (r0 + lane % 8 + 8 * (lane / 8 % 2)) * kLd + c0 + 8 * (lane / 16);
}

// Quarters in the order (r0, c0), (r0, c0 + 8), (r0 + 8, c0), (r0 + 8, c0 + 8): the B
// fragments of n-blocks r0 and r0 + 8 when the tile is stored [n][k].
__device__ __forceinline__ int ColsFirst(int r0, int c0) {
  const int lane = threadIdx.x % 32;
  return (r0 + lane % 8 + 8 * (lane / 16)) * kLd + c0 + 8 * (lane / 8 % 2);
}

// Queues the copy of a 64×64 bf16 tile (rows ld elements apart in global memory) into a
// staged tile: 16-byte pieces, all threads of the block.
__device__ __forceinline__ void CopyTileAsync(bf16* tile, const bf16* src, int64_t ld) {
  for (int v = threadIdx.x; v < kTile * kHS / 8; v += kThreads) {
    const int r = v / (kHS / 8), c = v % (kHS / 8) * 8;
    CpAsync16(tile + r * kLd + c, src + r * ld + c);
  }
}

// The A fragments of rows m0..m0+15 of a staged row-major tile, for the 4 k-steps.
__device__ __forceinline__ void LoadRowFrags(uint32_t (&f)[4][4], const bf16* tile, int m0) {
  for (int kk = 0; kk < 4; ++kk) LdMatrixX4(f[kk], tile + RowsFirst(m0, 16 * kk));
}

// acc += A · Bᵀ for A in fragments (16 × 64) and B a staged 64×64 tile (rows = n).
__device__ __forceinline__ void FragsTimesTileT(Acc& acc, const uint32_t (&a)[4][4],
                                                const bf16* b) {
  for (int kk = 0; kk < 4; ++kk) {
    for (int np = 0; np < 4; ++np) {
      uint32_t f[4];
      LdMatrixX4(f, b + ColsFirst(16 * np, 16 * kk));
      MmaBf16(acc[2 * np], a[kk], f[0], f[1]);
      MmaBf16(acc[2 * np + 1], a[kk], f[2], f[3]);
    }
  }
}

// acc += A · Bᵀ with A rows m0..m0+15 of a staged tile.
__device__ __forceinline__ void RowsTimesTileT(Acc& acc, const bf16* a, int m0, const bf16* b) {
  uint32_t f[4][4];
  LoadRowFrags(f, a, m0);
  FragsTimesTileT(acc, f, b);
}

// acc += P · B where P (16 × 64) is in C fragments and B is a staged 64×64 tile (rows = k):
// the C fragments of n-blocks 2j and 2j + 1, rounded to bf16, are the A fragment of k-step j.
__device__ __forceinline__ void AccTimesTile(Acc& acc, const Acc& p, const bf16* b) {
  for (int j = 0; j < 4; ++j) {
    const uint32_t a[4] = {
        PackBf16x2(p[2 * j][0], p[2 * j][1]), PackBf16x2(p[2 * j][2], p[2 * j][3]),
        PackBf16x2(p[2 * j + 1][0], p[2 * j + 1][1]), PackBf16x2(p[2 * j + 1][2], p[2 * j + 1][3])};
    for (int np = 0; np < 4; ++np) {
      uint32_t f[4];
      LdMatrixX4Trans(f, b + RowsFirst(16 * j, 16 * np));
      MmaBf16(acc[2 * np], a, f[0], f[1]);
      MmaBf16(acc[2 * np + 1], a, f[2], f[3]);
    }
  }
}

__device__ __forceinline__ float QuadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(kFullMask, v, 1));
  return fmaxf(v, __shfl_xor_sync(kFullMask, v, 2));
}

__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(kFullMask, v, 1);
  return v + __shfl_xor_sync(kFullMask, v, 2);
}

// Writes a warp's acc · mul as bf16 to 16 rows of a (.., ld) tensor at dst, through the warp's
// own rows m0.. of a staged tile (which no other warp reads), for 16-byte global stores.
__device__ __forceinline__ void StoreWarpRows(bf16* dst, int64_t ld, const Acc& acc,
                                              const float (&mul)[2], bf16* stage, int m0) {
  __syncwarp();
  for (int n = 0; n < kHS / 8; ++n) {
    for (int i = 0; i < 2; ++i) {
      *reinterpret_cast<uint32_t*>(stage + (m0 + AccRow(2 * i)) * kLd + AccCol(n, 0)) =
          PackBf16x2(acc[n][2 * i] * mul[i], acc[n][2 * i + 1] * mul[i]);
    }
  }
  __syncwarp();
  for (int v = threadIdx.x % 32; v < 16 * kHS / 8; v += 32) {
    const int r = v / (kHS / 8), c = v % (kHS / 8) * 8;
    StorePack<8>(dst + (m0 + r) * ld + c, LoadPack<8>(stage + (m0 + r) * kLd + c));
  }
}

// Shared memory of the forward kernel (dynamic, 45 KiB).
struct ForwardSmem {
  bf16 q[kTileElems], k[2][kTileElems], v[2][kTileElems];
};

__global__ void __launch_bounds__(kThreads)
    FlashForwardKernel(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH, float scale) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<ForwardSmem*>(smem_raw);
  // Late query tiles see the most key tiles: start them first.
  const int qt = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int m0 = threadIdx.x / 32 * 16;
  const int64_t ld = 3 * int64_t{C};
  const bf16* base = qkv + int64_t{b} * T * ld + int64_t{h} * kHS;
  CopyTileAsync(sm.q, base + int64_t{qt} * kTile * ld, ld);
  CopyTileAsync(sm.k[0], base + C, ld);
  CopyTileAsync(sm.v[0], base + 2 * int64_t{C}, ld);
  CpAsyncCommit();
  const float scale_log2 = scale * kLog2e;  // scores kept in log2 units: exp2 is one op
  uint32_t qf[4][4];
  Acc o = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this lane's partial sums
  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt % 2;
    if (kt < qt) {
      const bf16* next = base + int64_t{kt + 1} * kTile * ld;
      CopyTileAsync(sm.k[buf ^ 1], next + C, ld);
      CopyTileAsync(sm.v[buf ^ 1], next + 2 * int64_t{C}, ld);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    if (kt == 0) LoadRowFrags(qf, sm.q, m0);
    Acc s = {};
    FragsTimesTileT(s, qf, sm.k[buf]);
    float mx[2] = {m[0], m[1]};
    for (int n = 0; n < kHS / 8; ++n) {
      for (int e = 0; e < 4; ++e) {
        const bool masked = kt == qt && AccCol(n, e) > m0 + AccRow(e);
        s[n][e] = masked ? -INFINITY : s[n][e] * scale_log2;
        mx[e / 2] = fmaxf(mx[e / 2], s[n][e]);
      }
    }
    float alpha[2];
    for (int i = 0; i < 2; ++i) {
      // Finite from the first tile on: its key 0 is unmasked for every row.
      mx[i] = QuadMax(mx[i]);
      alpha[i] = exp2f(m[i] - mx[i]);  // 0 on the first tile (m = -inf)
      m[i] = mx[i];
      l[i] *= alpha[i];
    }
    for (int n = 0; n < kHS / 8; ++n) {
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - m[e / 2]);  // 0 where masked
        l[e / 2] += s[n][e];
        o[n][e] *= alpha[e / 2];
      }
    }
    AccTimesTile(o, s, sm.v[buf]);
    __syncthreads();  // the next iteration refills the other buffers
  }
  float inv[2];
  const int64_t row0 = int64_t{qt} * kTile + m0;
  for (int i = 0; i < 2; ++i) {
    l[i] = QuadSum(l[i]);
    inv[i] = 1.0f / l[i];
    if (threadIdx.x % 4 == 0) {
      lse[int64_t{bh} * T + row0 + AccRow(2 * i)] = m[i] / kLog2e + logf(l[i]);
    }
  }
  StoreWarpRows(out + (int64_t{b} * T + row0 - m0) * C + int64_t{h} * kHS, C, o, inv, sm.q, m0);
}

// delta[bh, t] = Σ_d dout · out over the head's channels: 8 lanes per row, 16-byte loads.
__global__ void FlashDeltaKernel(float* delta, const bf16* dout, const bf16* out, int B, int T,
                                 int C, int NH) {
  const int64_t row = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 8;
  const int part = threadIdx.x % 8;
  if (row >= int64_t{B} * NH * T) return;  // whole warps: the row count is a multiple of 64
  const int64_t t = row % T, bh = row / T, b = bh / NH, h = bh % NH;
  const int64_t at = (b * T + t) * C + h * kHS + part * 8;
  const Pack<bf16, 8> x = LoadPack<8>(dout + at), y = LoadPack<8>(out + at);
  float s = 0.0f;
  for (int i = 0; i < 8; ++i) s += ToFloat(x.v[i]) * ToFloat(y.v[i]);
  for (int off = 1; off < 8; off <<= 1) s += __shfl_xor_sync(kFullMask, s, off);
  if (part == 0) delta[row] = s;
}

// Shared memory of the dK/dV kernel (dynamic, 55 KiB).
struct BackwardKVSmem {
  bf16 k[kTileElems], v[kTileElems], q[2][kTileElems], dout[2][kTileElems];
  float lse[2][kTile], delta[2][kTile];
};

// dk, dv for one key tile; each warp owns 16 keys and works on transposed scores (keys ×
// queries) so that Pᵀ and dSᵀ are A fragments of dV += Pᵀ·dO and dK += dSᵀ·Q as they stand.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardKVKernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                          const float* delta, int T, int C, int NH, float scale) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<BackwardKVSmem*>(smem_raw);
  const int kt = blockIdx.x, nt = gridDim.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int m0 = threadIdx.x / 32 * 16;
  const int64_t ld = 3 * int64_t{C};
  const bf16* base = qkv + int64_t{b} * T * ld + int64_t{h} * kHS;
  const bf16* dbase = dout + int64_t{b} * T * C + int64_t{h} * kHS;
  const auto stage = [&](int qt, int buf) {
    CopyTileAsync(sm.q[buf], base + int64_t{qt} * kTile * ld, ld);
    CopyTileAsync(sm.dout[buf], dbase + int64_t{qt} * kTile * C, C);
    const int64_t row = int64_t{bh} * T + int64_t{qt} * kTile + threadIdx.x % kTile;
    if (threadIdx.x < kTile) {
      sm.lse[buf][threadIdx.x] = lse[row] * kLog2e;
    } else {
      sm.delta[buf][threadIdx.x - kTile] = delta[row];
    }
  };
  CopyTileAsync(sm.k, base + int64_t{kt} * kTile * ld + C, ld);
  CopyTileAsync(sm.v, base + int64_t{kt} * kTile * ld + 2 * int64_t{C}, ld);
  stage(kt, 0);
  CpAsyncCommit();
  const float scale_log2 = scale * kLog2e;
  Acc dk = {}, dv = {};
  for (int qt = kt; qt < nt; ++qt) {
    const int buf = (qt - kt) % 2;
    if (qt + 1 < nt) {
      stage(qt + 1, buf ^ 1);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    Acc p = {};  // Sᵀ, then Pᵀ
    RowsTimesTileT(p, sm.k, m0, sm.q[buf]);
    for (int n = 0; n < kHS / 8; ++n) {
      for (int e = 0; e < 4; ++e) {
        const int query = AccCol(n, e);
        const bool masked = qt == kt && m0 + AccRow(e) > query;
        p[n][e] = masked ? 0.0f : exp2f(p[n][e] * scale_log2 - sm.lse[buf][query]);
      }
    }
    Acc ds = {};  // dPᵀ, then dSᵀ / scale
    RowsTimesTileT(ds, sm.v, m0, sm.dout[buf]);
    AccTimesTile(dv, p, sm.dout[buf]);
    for (int n = 0; n < kHS / 8; ++n) {
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - sm.delta[buf][AccCol(n, e)]);
    }
    AccTimesTile(dk, ds, sm.q[buf]);
    __syncthreads();  // the next iteration refills the other buffers
  }
  bf16* dst = dqkv + (int64_t{b} * T + int64_t{kt} * kTile) * ld + int64_t{h} * kHS;
  StoreWarpRows(dst + C, ld, dk, {scale, scale}, sm.k, m0);
  StoreWarpRows(dst + 2 * int64_t{C}, ld, dv, {1.0f, 1.0f}, sm.v, m0);
}

// Shared memory of the dQ kernel (dynamic, 54 KiB).
struct BackwardQSmem {
  bf16 q[kTileElems], dout[kTileElems], k[2][kTileElems], v[2][kTileElems];
};

// dq for one query tile: loops over the key tiles at or before it.
__global__ void __launch_bounds__(kThreads)
    FlashBackwardQKernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                         const float* delta, int T, int C, int NH, float scale) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<BackwardQSmem*>(smem_raw);
  const int qt = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int m0 = threadIdx.x / 32 * 16;
  const int64_t ld = 3 * int64_t{C};
  const bf16* base = qkv + int64_t{b} * T * ld + int64_t{h} * kHS;
  CopyTileAsync(sm.q, base + int64_t{qt} * kTile * ld, ld);
  CopyTileAsync(sm.dout, dout + (int64_t{b} * T + int64_t{qt} * kTile) * C + int64_t{h} * kHS, C);
  CopyTileAsync(sm.k[0], base + C, ld);
  CopyTileAsync(sm.v[0], base + 2 * int64_t{C}, ld);
  CpAsyncCommit();
  float row_lse[2], row_delta[2];
  for (int i = 0; i < 2; ++i) {
    const int64_t row = int64_t{bh} * T + int64_t{qt} * kTile + m0 + AccRow(2 * i);
    row_lse[i] = lse[row] * kLog2e;
    row_delta[i] = delta[row];
  }
  const float scale_log2 = scale * kLog2e;
  uint32_t qf[4][4], df[4][4];
  Acc dq = {};
  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt % 2;
    if (kt < qt) {
      const bf16* next = base + int64_t{kt + 1} * kTile * ld;
      CopyTileAsync(sm.k[buf ^ 1], next + C, ld);
      CopyTileAsync(sm.v[buf ^ 1], next + 2 * int64_t{C}, ld);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    if (kt == 0) {
      LoadRowFrags(qf, sm.q, m0);
      LoadRowFrags(df, sm.dout, m0);
    }
    Acc p = {};  // S, then P
    FragsTimesTileT(p, qf, sm.k[buf]);
    for (int n = 0; n < kHS / 8; ++n) {
      for (int e = 0; e < 4; ++e) {
        const bool masked = kt == qt && AccCol(n, e) > m0 + AccRow(e);
        p[n][e] = masked ? 0.0f : exp2f(p[n][e] * scale_log2 - row_lse[e / 2]);
      }
    }
    Acc ds = {};  // dP, then dS / scale
    FragsTimesTileT(ds, df, sm.v[buf]);
    for (int n = 0; n < kHS / 8; ++n) {
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - row_delta[e / 2]);
    }
    AccTimesTile(dq, ds, sm.k[buf]);
    __syncthreads();  // the next iteration refills the other buffers
  }
  StoreWarpRows(dqkv + (int64_t{b} * T + int64_t{qt} * kTile) * ld + int64_t{h} * kHS, ld, dq,
                {scale, scale}, sm.q, m0);
}

absl::Status CheckShape(int B, int T, int C, int NH) {
  if (B <= 0 || !FlashAttentionSupports(T, C, NH)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flash attention needs head size 64 and T a multiple of 64, got B=", B,
                     " T=", T, " C=", C, " NH=", NH));
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
  if (!IsAligned(out, 16) || !IsAligned(qkv, 16)) {
    return absl::InvalidArgumentError(
        "flash attention forward: out and qkv need 16-byte alignment");
  }
  const size_t smem = sizeof(ForwardSmem);
  BELAY_RETURN_IF_NOT_OK(AllowSmem(FlashForwardKernel, smem));
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHS));
  FlashForwardKernel<<<dim3(T / kTile, B * NH), kThreads, smem, stream>>>(out, lse, qkv, T, C, NH,
                                                                          scale);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashForwardKernel");
  return absl::OkStatus();
}

absl::Status FlashAttentionBackward(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                                    const bf16* out, const float* lse, int B, int T, int C, int NH,
                                    cudaStream_t stream) {
  BELAY_RETURN_IF_NOT_OK(CheckShape(B, T, C, NH));
  if (dqkv == nullptr || scratch == nullptr || dout == nullptr || qkv == nullptr ||
      out == nullptr || lse == nullptr) {
    return absl::InvalidArgumentError("flash attention backward: a buffer is null");
  }
  if (!IsAligned(dqkv, 16) || !IsAligned(dout, 16) || !IsAligned(qkv, 16) || !IsAligned(out, 16)) {
    return absl::InvalidArgumentError(
        "flash attention backward: dqkv, dout, qkv and out need 16-byte alignment");
  }
  const int64_t rows = int64_t{B} * NH * T;
  FlashDeltaKernel<<<CeilDiv(rows * 8, 256), 256, 0, stream>>>(scratch, dout, out, B, T, C, NH);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashDeltaKernel");
  BELAY_RETURN_IF_NOT_OK(AllowSmem(FlashBackwardKVKernel, sizeof(BackwardKVSmem)));
  BELAY_RETURN_IF_NOT_OK(AllowSmem(FlashBackwardQKernel, sizeof(BackwardQSmem)));
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHS));
  const dim3 grid(T / kTile, B * NH);
  FlashBackwardKVKernel<<<grid, kThreads, sizeof(BackwardKVSmem), stream>>>(
      dqkv, qkv, dout, lse, scratch, T, C, NH, scale);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashBackwardKVKernel");
  FlashBackwardQKernel<<<grid, kThreads, sizeof(BackwardQSmem), stream>>>(dqkv, qkv, dout, lse,
                                                                          scratch, T, C, NH, scale);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED("FlashBackwardQKernel");
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
