// Fused softmax + cross-entropy over a padded vocabulary on the GPU, gradient written in place.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/softmax_xent.h"

namespace belay::kernels::cuda {
namespace {

constexpr int kThreads = 512;

// A running maximum m and the sum s of exp(x - m) over the elements seen so far.
struct MaxSum {
  float m, s;
};

// Symmetric in its arguments (fmaxf and + commute exactly), so every lane of a butterfly
// reduction ends with the same bits.
__device__ __forceinline__ MaxSum Merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ MaxSum WarpMerge(MaxSum v) {
  for (int off = 16; off > 0; off >>= 1) {
    v = Merge(v, {__shfl_xor_sync(kFullMask, v.m, off), __shfl_xor_sync(kFullMask, v.s, off)});
  }
  return v;
}

// Every thread gets the block's merge; the order is fixed by the block size. Called once per
// block (`shared` is not reused).
__device__ __forceinline__ MaxSum BlockMerge(MaxSum v, MaxSum* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = WarpMerge(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return WarpMerge(lane < static_cast<int>(blockDim.x / 32) ? shared[lane]
                                                            : MaxSum{-INFINITY, 0.0f});
}

// One block per row; thread i owns packs i, i + blockDim.x, ... of kVec logits. The row is
// read twice: once for the statistics (online max and sum), once for the gradient.
template <int kVec>
__global__ void SoftmaxXentKernel(bf16* logits, float* losses, const int32_t* targets,
                                  const uint8_t* mask, float scale, bool write_grad, int V,
                                  int Vp) {
  __shared__ MaxSum shared[32];
  const int row = blockIdx.x;
  bf16* z = logits + int64_t{row} * Vp;
  const int row_packs = Vp / kVec;
  if (mask[row] == 0) {  // excluded: the target is never read
    if (threadIdx.x == 0) losses[row] = 0.0f;
    if (!write_grad) return;
    Pack<bf16, kVec> zero;
    for (int k = 0; k < kVec; ++k) zero.v[k] = ToBf16(0.0f);
    for (int p = threadIdx.x; p < row_packs; p += blockDim.x) StorePack<kVec>(z + p * kVec, zero);
    return;
  }
  const int target = targets[row];
  const bool valid = target >= 0 && target < V;
  // Read before the barrier in BlockMerge, after which the row is overwritten.
  const float zt = threadIdx.x == 0 && valid ? ToFloat(z[target]) : 0.0f;
  MaxSum ms{-INFINITY, 0.0f};
  const int real_packs = (V + kVec - 1) / kVec;
  for (int p = threadIdx.x; p < real_packs; p += blockDim.x) {
    const Pack<bf16, kVec> x = LoadPack<kVec>(z + p * kVec);
    float pm = -INFINITY;
    for (int k = 0; k < kVec; ++k) {
      if (p * kVec + k < V) pm = fmaxf(pm, ToFloat(x.v[k]));
    }
    const float m = fmaxf(ms.m, pm);
    float add = 0.0f;
    for (int k = 0; k < kVec; ++k) {
      if (p * kVec + k < V) add += expf(ToFloat(x.v[k]) - m);
    }
    ms = {m, ms.s * expf(ms.m - m) + add};
  }
  ms = BlockMerge(ms, shared);
  if (threadIdx.x == 0) losses[row] = valid ? logf(ms.s) - (zt - ms.m) : NAN;
  if (!write_grad) return;
  const float inv = 1.0f / ms.s;
  for (int p = threadIdx.x; p < row_packs; p += blockDim.x) {
    Pack<bf16, kVec> x = LoadPack<kVec>(z + p * kVec);
    for (int k = 0; k < kVec; ++k) {
      const int j = p * kVec + k;
      const float prob = expf(ToFloat(x.v[k]) - ms.m) * inv;
      const float d = j >= V ? 0.0f : j == target ? scale * (prob - 1.0f) : scale * prob;
      x.v[k] = ToBf16(d);
    }
    StorePack<kVec>(z + p * kVec, x);
  }
}

template <typename... Args>
absl::Status Invalid(const char* op, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", args...));
}

}  // namespace

absl::Status SoftmaxCrossEntropy(bf16* logits, float* losses, const int32_t* targets,
                                 const uint8_t* mask, float scale, bool write_grad, int N, int V,
                                 int Vp, cudaStream_t stream) {
  constexpr const char* kOp = "SoftmaxCrossEntropy";
  if (N <= 0) return Invalid(kOp, "N must be > 0, got ", N);
  if (V <= 0) return Invalid(kOp, "V must be > 0, got ", V);
  if (Vp < V) return Invalid(kOp, "Vp must be >= V, got V ", V, " Vp ", Vp);
  if (logits == nullptr) return Invalid(kOp, "logits is null");
  if (losses == nullptr) return Invalid(kOp, "losses is null");
  if (targets == nullptr) return Invalid(kOp, "targets is null");
  if (mask == nullptr) return Invalid(kOp, "mask is null");
  if (Vp % 8 == 0 && IsAligned(logits, 16)) {
    SoftmaxXentKernel<8>
        <<<N, kThreads, 0, stream>>>(logits, losses, targets, mask, scale, write_grad, V, Vp);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(SoftmaxXentKernel<8>);
  } else {
    SoftmaxXentKernel<1>
        <<<N, kThreads, 0, stream>>>(logits, losses, targets, mask, scale, write_grad, V, Vp);
    BELAY_CUDA_RETURN_IF_LAUNCH_FAILED(SoftmaxXentKernel<1>);
  }
  return absl::OkStatus();
}

}  // namespace belay::kernels::cuda
