// Token + position embedding on the GPU: forward, and a backward pass without atomics.
#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/encoder.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per kVec consecutive channels of one (b,t) row.
template <int kVec>
__global__ void EncoderForwardKernel(bf16* out, const int32_t* tokens, const bf16* wte,
                                     const bf16* wpe, int64_t BT, int T, int C) {
  const int packs = C / kVec;
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= BT * packs) return;
  const int64_t bt = idx / packs;
  const int c = static_cast<int>(idx % packs) * kVec;
  const int t = static_cast<int>(bt % T);
  const Pack<bf16, kVec> e = LoadPack<kVec>(wte + int64_t{tokens[bt]} * C + c);
  const Pack<bf16, kVec> p = LoadPack<kVec>(wpe + int64_t{t} * C + c);
  Pack<bf16, kVec> o;
#pragma unroll
  for (int i = 0; i < kVec; ++i) o.v[i] = ToBf16(ToFloat(e.v[i]) + ToFloat(p.v[i]));
  StorePack<kVec>(out + bt * C + c, o);
}

// dwte: one thread per (distinct token, channel), adding that token's positions in ascending
// order onto the existing value (the CPU reference's order exactly).
__global__ void EncoderBackwardWteKernel(float* dwte, const bf16* dout, const int32_t* ids,
                                         const int32_t* starts, const int32_t* positions, int n_ids,
                                         int C) {
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= int64_t{n_ids} * C) return;
  const int g = static_cast<int>(idx / C);
  const int c = static_cast<int>(idx % C);
  float* d = dwte + int64_t{ids[g]} * C + c;
  float acc = *d;
  const int end = starts[g + 1];
  int i = starts[g];
  // kBatch loads in flight at a time (a frequent token has thousands of positions), added in
  // the same order as one at a time.
  constexpr int kBatch = 8;
  for (; i + kBatch <= end; i += kBatch) {
    float x[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) x[k] = ToFloat(dout[int64_t{positions[i + k]} * C + c]);
#pragma unroll
    for (int k = 0; k < kBatch; ++k) acc += x[k];
  }
  for (; i < end; ++i) acc += ToFloat(dout[int64_t{positions[i]} * C + c]);
  *d = acc;
}

// dwpe: one thread per (t, channel), adding over b in order onto the existing value.
__global__ void EncoderBackwardWpeKernel(float* dwpe, const bf16* dout, int B, int T, int C) {
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= int64_t{T} * C) return;
  float acc = dwpe[idx];
  const int64_t stride = int64_t{T} * C;  // from (b,t,c) to (b+1,t,c)
  for (int b = 0; b < B; ++b) acc += ToFloat(dout[b * stride + idx]);
  dwpe[idx] = acc;
}

template <typename... Args>
absl::Status Invalid(const char* op, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", args...));
}

absl::Status CheckShape(const char* op, int B, int T, int C) {
  if (B <= 0) return Invalid(op, "B must be > 0, got ", B);
  if (T <= 0) return Invalid(op, "T must be > 0, got ", T);
  if (C <= 0) return Invalid(op, "C must be > 0, got ", C);
  return absl::OkStatus();
}

}  // namespace

absl::Status EncoderForward(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe,
                            int B, int T, int C, cudaStream_t stream) {
  constexpr const char* kOp = "EncoderForward";
  if (absl::Status s = CheckShape(kOp, B, T, C); !s.ok()) return s;
  if (out == nullptr) return Invalid(kOp, "out is null");
  if (tokens == nullptr) return Invalid(kOp, "tokens is null");
  if (wte == nullptr) return Invalid(kOp, "wte is null");
  if (wpe == nullptr) return Invalid(kOp, "wpe is null");
  const int64_t BT = int64_t{B} * T;
  const bool vec = C % 8 == 0 && IsAligned(out, 16) && IsAligned(wte, 16) && IsAligned(wpe, 16);
  if (vec) {
    EncoderForwardKernel<8>
        <<<CeilDiv(BT * (C / 8), kThreads), kThreads, 0, stream>>>(out, tokens, wte, wpe, BT, T, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(EncoderForwardKernel<8>);
  } else {
    EncoderForwardKernel<1>
        <<<CeilDiv(BT * C, kThreads), kThreads, 0, stream>>>(out, tokens, wte, wpe, BT, T, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(EncoderForwardKernel<1>);
  }
  return absl::OkStatus();
}

EncoderBuckets BucketTokens(const int32_t* tokens, int n) {
  EncoderBuckets out;
  std::vector<int32_t> order(static_cast<size_t>(std::max(n, 0)));
  std::iota(order.begin(), order.end(), 0);
  // Stable: positions stay ascending within each token's group.
  std::stable_sort(order.begin(), order.end(),
                   [tokens](int32_t a, int32_t b) { return tokens[a] < tokens[b]; });
  for (size_t i = 0; i < order.size(); ++i) {
    if (i == 0 || tokens[order[i]] != tokens[order[i - 1]]) {
      out.ids.push_back(tokens[order[i]]);
      out.starts.push_back(static_cast<int32_t>(i));
    }
  }
  out.starts.push_back(static_cast<int32_t>(order.size()));
  out.positions = std::move(order);
  return out;
}

absl::Status EncoderBackward(float* dwte, float* dwpe, const bf16* dout,
                             const EncoderBucketsView& buckets, int B, int T, int C,
                             cudaStream_t stream) {
  constexpr const char* kOp = "EncoderBackward";
  if (absl::Status s = CheckShape(kOp, B, T, C); !s.ok()) return s;
  if (buckets.n_ids < 0) return Invalid(kOp, "buckets.n_ids must be >= 0, got ", buckets.n_ids);
  if (dwte == nullptr) return Invalid(kOp, "dwte is null");
  if (dwpe == nullptr) return Invalid(kOp, "dwpe is null");
  if (dout == nullptr) return Invalid(kOp, "dout is null");
  if (buckets.n_ids > 0 &&
      (buckets.ids == nullptr || buckets.starts == nullptr || buckets.positions == nullptr)) {
    return Invalid(kOp, "buckets has null arrays with n_ids ", buckets.n_ids);
  }
  EncoderBackwardWpeKernel<<<CeilDiv(int64_t{T} * C, kThreads), kThreads, 0, stream>>>(dwpe, dout,
                                                                                       B, T, C);
  BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(EncoderBackwardWpeKernel);
  if (buckets.n_ids > 0) {
    EncoderBackwardWteKernel<<<CeilDiv(int64_t{buckets.n_ids} * C, kThreads), kThreads, 0,
                               stream>>>(dwte, dout, buckets.ids, buckets.starts, buckets.positions,
                                         buckets.n_ids, C);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(EncoderBackwardWteKernel);
  }
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
