// GQA attention with a document mask on the GPU, flash-style and kept plain: a block owns a
// tile of 32 query rows (forward, dQ) or 32 key rows (dK/dV), each warp 4 of them; the other
// side streams through shared memory 32 rows at a time, lane j taking row j of that tile.
#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gqa_attention.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kTile = 32;  // rows per tile: one per lane
constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kRowsPerWarp = kTile / kWarps;
constexpr int kMaxHs = kGqaMaxHeadSize;
constexpr int kChunks = kMaxHs / 32;  // values of an accumulated row per lane: d = lane + 32c
// bf16 per shared row: an odd number of 4-byte words, so lanes reading the same column of
// different rows hit different banks.
constexpr int kPitch = kMaxHs + 2;

using Tile = bf16[kTile][kPitch];

struct Dims {
  int T, NH, NKV, hs, group;
  int64_t W;  // values per token in qkv
  float scale;
};

Dims DimsOf(const cpu::GqaShape& s) {
  return {s.T,
          s.NH,
          s.NKV,
          s.hs,
          s.NH / s.NKV,
          s.QkvWidth(),
          1.0f / std::sqrt(static_cast<float>(s.hs))};
}

// Rows t0 .. t0 + kTile - 1 of a head, `row_stride` values apart from `base`; zero past T.
__device__ void LoadTile(Tile& dst, const bf16* base, int64_t row_stride, int t0, int T, int hs) {
  for (int i = threadIdx.x; i < kTile * hs; i += blockDim.x) {
    const int r = i / hs, d = i % hs, t = t0 + r;
    dst[r][d] = t < T ? base[int64_t{t} * row_stride + d] : ToBf16(0.0f);
  }
}

__device__ __forceinline__ float Dot(const bf16* a, const bf16* b, int hs) {
  float dot = 0;
  for (int d = 0; d < hs; ++d) dot += ToFloat(a[d]) * ToFloat(b[d]);
  return dot;
}

// acc[c] += sum over j of w_j * rows[j][lane + 32c], w_j being lane j's w, in order of j.
__device__ __forceinline__ void AddWeightedRows(float (&acc)[kChunks], float w, const Tile& rows,
                                                int hs) {
  const int lane = threadIdx.x % 32;
  for (int j = 0; j < kTile; ++j) {
    const float wj = __shfl_sync(kFullMask, w, j);
    if (wj == 0) continue;  // the same for the whole warp
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hs) acc[c] += wj * ToFloat(rows[j][d]);
    }
  }
}

// Stores row `values` (lane's d = lane + 32c) times `mul` as bf16 at dst[0..hs).
__device__ __forceinline__ void StoreRow(bf16* dst, const float (&values)[kChunks], float mul,
                                         int hs) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + 32 * c;
    if (d < hs) dst[d] = ToBf16(values[c] * mul);
  }
}

// Token t's document id; 0 for every token without a mask, and past T.
__device__ __forceinline__ int32_t DocOf(const int32_t* bdoc, int t, int T) {
  return bdoc == nullptr || t >= T ? 0 : bdoc[t];
}

// Where query head h, key head g and value head g start in a token's qkv values.
__device__ __forceinline__ int64_t QOffset(const Dims& n, int h) { return int64_t{h} * n.hs; }
__device__ __forceinline__ int64_t KOffset(const Dims& n, int g) {
  return int64_t{n.NH + g} * n.hs;
}
__device__ __forceinline__ int64_t VOffset(const Dims& n, int g) {
  return int64_t{n.NH + n.NKV + g} * n.hs;
}

// Batch row b's qkv rows, document ids (null: no mask) and output-gradient rows.
struct BatchRow {
  const bf16* qkv;
  const int32_t* doc;
  const bf16* dout;
};

__device__ __forceinline__ BatchRow RowOf(const bf16* qkv, const int32_t* doc, const bf16* dout,
                                          const Dims& n, int b) {
  return {qkv + int64_t{b} * n.T * n.W, doc == nullptr ? nullptr : doc + int64_t{b} * n.T,
          dout == nullptr ? nullptr : dout + int64_t{b} * n.T * n.NH * n.hs};
}

// Keys and values k0 .. k0 + kTile - 1 of head g, with their document ids.
struct KeyTile {
  Tile k, v;
  int32_t doc[kTile];
};

__device__ void LoadKeyTile(KeyTile& dst, const BatchRow& row, int g, int k0, const Dims& n) {
  LoadTile(dst.k, row.qkv + KOffset(n, g), n.W, k0, n.T, n.hs);
  LoadTile(dst.v, row.qkv + VOffset(n, g), n.W, k0, n.T, n.hs);
  if (threadIdx.x < kTile) dst.doc[threadIdx.x] = DocOf(row.doc, k0 + threadIdx.x, n.T);
}

// Queries q0 .. q0 + kTile - 1 of head h and their output gradients (backward).
__device__ void LoadQueryTile(Tile& q, Tile& dout, const BatchRow& row, int h, int q0,
                              const Dims& n) {
  LoadTile(q, row.qkv + QOffset(n, h), n.W, q0, n.T, n.hs);
  LoadTile(dout, row.dout + int64_t{h} * n.hs, int64_t{n.NH} * n.hs, q0, n.T, n.hs);
}

// Grid (query tiles, NH, B). Row r of the tile (warp r % kWarps) keeps its running max m,
// sum l and output accumulator; each key tile updates them once (online softmax).
__global__ void ForwardKernel(bf16* out, float* lse, const bf16* qkv, const int32_t* doc, Dims n) {
  __shared__ Tile qs;
  __shared__ KeyTile kv;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const BatchRow row = RowOf(qkv, doc, nullptr, n, b);
  LoadTile(qs, row.qkv + QOffset(n, h), n.W, q0, n.T, n.hs);
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kChunks] = {};
  int32_t qdoc[kRowsPerWarp];
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0;
    qdoc[i] = DocOf(row.doc, q0 + warp + kWarps * i, n.T);
  }
  const int last = min(n.T, q0 + kTile) - 1;  // the tile's last query: no key after it counts
  for (int k0 = 0; k0 <= last; k0 += kTile) {
    __syncthreads();  // the previous key tile is no longer read
    LoadKeyTile(kv, row, h / n.group, k0, n);
    __syncthreads();
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = warp + kWarps * i, t = q0 + r;
      if (t >= n.T) continue;  // whole warps: the row is the warp's
      const bool visible = k0 + lane <= t && kv.doc[lane] == qdoc[i];
      const float s = visible ? Dot(qs[r], kv.k[lane], n.hs) * n.scale : -INFINITY;
      const float m_new = fmaxf(m[i], WarpMax(s));
      if (m_new == -INFINITY) continue;  // nothing visible to this row yet
      const float p = visible ? expf(s - m_new) : 0.0f;
      const float corr = expf(m[i] - m_new);  // 0 while m is still -inf
      l[i] = l[i] * corr + WarpSum(p);
      for (int c = 0; c < kChunks; ++c) acc[i][c] *= corr;
      AddWeightedRows(acc[i], p, kv.v, n.hs);
      m[i] = m_new;
    }
  }
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int t = q0 + warp + kWarps * i;
    if (t >= n.T) continue;
    // l >= 1: a query always sees itself.
    StoreRow(out + (int64_t{b} * n.T + t) * n.NH * n.hs + int64_t{h} * n.hs, acc[i], 1.0f / l[i],
             n.hs);
    if (lane == 0) lse[(int64_t{b} * n.NH + h) * n.T + t] = m[i] + logf(l[i]);
  }
}

// delta (B,T,NH) = rowsum(dout * out): the softmax backward's sum(a * datt) per query row.
// One warp per row.
__global__ void DeltaKernel(float* delta, const bf16* dout, const bf16* out, int64_t rows, int hs) {
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  if (r >= rows) return;
  float sum = 0;
  for (int d = lane; d < hs; d += 32) sum += ToFloat(dout[r * hs + d]) * ToFloat(out[r * hs + d]);
  sum = WarpSum(sum);
  if (lane == 0) delta[r] = sum;
}

// Per-query-row values of a tile for the backward kernels.
struct RowStats {
  float lse, delta;
  int32_t doc;
};

__device__ __forceinline__ RowStats StatsOf(const float* lse, const float* delta,
                                            const BatchRow& row, const Dims& n, int b, int h,
                                            int t) {
  if (t >= n.T) return {0, 0, 0};
  return {lse[(int64_t{b} * n.NH + h) * n.T + t], delta[(int64_t{b} * n.T + t) * n.NH + h],
          DocOf(row.doc, t, n.T)};
}

// dQ: grid (query tiles, NH, B). For query row t and key j: p = exp(s - lse_t),
// ds = p * (dout_t . v_j - delta_t); dq_t = scale * sum_j ds * k_j.
__global__ void DqKernel(bf16* dqkv, const float* delta, const bf16* dout, const bf16* qkv,
                         const float* lse, const int32_t* doc, Dims n) {
  __shared__ Tile qs, dos;
  __shared__ KeyTile kv;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const BatchRow row = RowOf(qkv, doc, dout, n, b);
  LoadQueryTile(qs, dos, row, h, q0, n);
  float dq[kRowsPerWarp][kChunks] = {};
  RowStats stats[kRowsPerWarp];
  for (int i = 0; i < kRowsPerWarp; ++i) {
    stats[i] = StatsOf(lse, delta, row, n, b, h, q0 + warp + kWarps * i);
  }
  const int last = min(n.T, q0 + kTile) - 1;
  for (int k0 = 0; k0 <= last; k0 += kTile) {
    __syncthreads();
    LoadKeyTile(kv, row, h / n.group, k0, n);
    __syncthreads();
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = warp + kWarps * i, t = q0 + r;
      if (t >= n.T) continue;
      float ds = 0;
      if (k0 + lane <= t && kv.doc[lane] == stats[i].doc) {
        const float p = expf(Dot(qs[r], kv.k[lane], n.hs) * n.scale - stats[i].lse);
        ds = p * (Dot(dos[r], kv.v[lane], n.hs) - stats[i].delta);
      }
      AddWeightedRows(dq[i], ds, kv.k, n.hs);
    }
  }
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int t = q0 + warp + kWarps * i;
    if (t >= n.T) continue;
    StoreRow(dqkv + (int64_t{b} * n.T + t) * n.W + QOffset(n, h), dq[i], n.scale, n.hs);
  }
}

// dK, dV: grid (key tiles, NKV, B). Key row u gathers over the group's query heads in order,
// and over the query tiles from its own to the last: dv_u = sum p * dout_t,
// dk_u = scale * sum ds * q_t.
__global__ void DkvKernel(bf16* dqkv, const float* delta, const bf16* dout, const bf16* qkv,
                          const float* lse, const int32_t* doc, Dims n) {
  __shared__ KeyTile kv;
  __shared__ Tile qs, dos;
  __shared__ RowStats qrow[kTile];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int k0 = blockIdx.x * kTile, g = blockIdx.y, b = blockIdx.z;
  const BatchRow row = RowOf(qkv, doc, dout, n, b);
  LoadKeyTile(kv, row, g, k0, n);
  float dk[kRowsPerWarp][kChunks] = {}, dv[kRowsPerWarp][kChunks] = {};
  for (int h = g * n.group; h < (g + 1) * n.group; ++h) {
    for (int q0 = k0; q0 < n.T; q0 += kTile) {  // earlier queries never see these keys
      __syncthreads();
      LoadQueryTile(qs, dos, row, h, q0, n);
      if (threadIdx.x < kTile)
        qrow[threadIdx.x] = StatsOf(lse, delta, row, n, b, h, q0 + threadIdx.x);
      __syncthreads();
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int r = warp + kWarps * i, u = k0 + r;
        if (u >= n.T) continue;
        const int t = q0 + lane;
        float p = 0, ds = 0;
        if (t < n.T && t >= u && qrow[lane].doc == kv.doc[r]) {
          p = expf(Dot(qs[lane], kv.k[r], n.hs) * n.scale - qrow[lane].lse);
          ds = p * (Dot(dos[lane], kv.v[r], n.hs) - qrow[lane].delta);
        }
        AddWeightedRows(dv[i], p, dos, n.hs);
        AddWeightedRows(dk[i], ds, qs, n.hs);
      }
    }
  }
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int u = k0 + warp + kWarps * i;
    if (u >= n.T) continue;
    bf16* drow = dqkv + (int64_t{b} * n.T + u) * n.W;
    StoreRow(drow + KOffset(n, g), dk[i], n.scale, n.hs);
    StoreRow(drow + VOffset(n, g), dv[i], 1.0f, n.hs);
  }
}

absl::Status CheckShape(const char* op, const cpu::GqaShape& s) {
  if (s.B <= 0 || s.B > 65535) return InvalidArgument(op, "B must be in [1, 65535], got ", s.B);
  if (s.T <= 0) return InvalidArgument(op, "T must be > 0, got ", s.T);
  if (s.NH <= 0 || s.NH > 65535) return InvalidArgument(op, "NH must be in [1, 65535], got ", s.NH);
  if (s.NKV <= 0 || s.NH % s.NKV != 0) {
    return InvalidArgument(op, "NKV must divide NH, got NKV ", s.NKV, " for NH ", s.NH);
  }
  if (s.hs <= 0 || s.hs > kMaxHs) {
    return InvalidArgument(op, "hs must be in [1, ", kMaxHs, "], got ", s.hs);
  }
  return absl::OkStatus();
}

dim3 Grid(const cpu::GqaShape& s, int heads) { return dim3(CeilDiv(s.T, kTile), heads, s.B); }

}  // namespace

absl::Status GqaAttentionForward(bf16* out, float* lse, const bf16* qkv, const int32_t* doc,
                                 const cpu::GqaShape& s, cudaStream_t stream) {
  constexpr const char* kOp = "GqaAttentionForward";
  BELAY_RETURN_IF_NOT_OK(CheckShape(kOp, s));
  if (out == nullptr || lse == nullptr) return InvalidArgument(kOp, "out or lse is null");
  if (qkv == nullptr) return InvalidArgument(kOp, "qkv is null");
  ForwardKernel<<<Grid(s, s.NH), kThreads, 0, stream>>>(out, lse, qkv, doc, DimsOf(s));
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(ForwardKernel);
  return absl::OkStatus();
}

size_t GqaAttentionBackwardScratch(const cpu::GqaShape& s) {
  if (s.B <= 0 || s.T <= 0 || s.NH <= 0) return 0;
  return static_cast<size_t>(s.B) * static_cast<size_t>(s.T) * static_cast<size_t>(s.NH);
}

absl::Status GqaAttentionBackward(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                                  const bf16* out, const float* lse, const int32_t* doc,
                                  const cpu::GqaShape& s, cudaStream_t stream) {
  constexpr const char* kOp = "GqaAttentionBackward";
  BELAY_RETURN_IF_NOT_OK(CheckShape(kOp, s));
  if (dqkv == nullptr || scratch == nullptr) return InvalidArgument(kOp, "dqkv or scratch is null");
  if (dout == nullptr || qkv == nullptr) return InvalidArgument(kOp, "dout or qkv is null");
  if (out == nullptr || lse == nullptr) return InvalidArgument(kOp, "out or lse is null");
  const Dims n = DimsOf(s);
  const int64_t rows = int64_t{s.B} * s.T * s.NH;
  DeltaKernel<<<CeilDiv(rows, kWarps), kThreads, 0, stream>>>(scratch, dout, out, rows, s.hs);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(DeltaKernel);
  DqKernel<<<Grid(s, s.NH), kThreads, 0, stream>>>(dqkv, scratch, dout, qkv, lse, doc, n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(DqKernel);
  DkvKernel<<<Grid(s, s.NKV), kThreads, 0, stream>>>(dqkv, scratch, dout, qkv, lse, doc, n);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(DkvKernel);
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
