// Token + position embedding on the GPU (reference: kernels/encoder.h).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// out (B,T,C) bf16 = wte[tokens[b,t]] + wpe[t], summed in fp32 and rounded once. tokens (B,T)
// on the device, each < the rows of wte.
absl::Status EncoderForward(bf16* out, const int32_t* tokens, const bf16* wte, const bf16* wpe,
                            int B, int T, int C, cudaStream_t stream);

// Positions grouped by token, for a backward pass without atomics. Built on the host from the
// micro-batch's tokens (which the host has anyway) and uploaded with it.
struct EncoderBuckets {
  std::vector<int32_t> ids;        // the distinct tokens, ascending
  std::vector<int32_t> starts;     // ids.size() + 1 offsets into positions
  std::vector<int32_t> positions;  // b*T+t, grouped by token, ascending within a group
};
EncoderBuckets BucketTokens(const int32_t* tokens, int n);

// Device copies of EncoderBuckets' three arrays (n_ids distinct tokens).
struct EncoderBucketsView {
  const int32_t* ids = nullptr;
  const int32_t* starts = nullptr;
  const int32_t* positions = nullptr;
  int n_ids = 0;
};

// Accumulates (+=) into dwte (Vp,C) and dwpe (>=T,C), fp32. Every element is one thread's sum
// in a fixed order (positions ascending), so the result repeats bit for bit.
absl::Status EncoderBackward(float* dwte, float* dwpe, const bf16* dout,
                             const EncoderBucketsView& buckets, int B, int T, int C,
                             cudaStream_t stream);

}  // namespace belay::kernels::cuda
