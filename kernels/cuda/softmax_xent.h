// Fused softmax + cross-entropy over a padded vocabulary, with the loss mask (Goldfish), on
// the GPU (reference: kernels/softmax_xent.h).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// logits (N,Vp) bf16; the first V columns are real tokens. losses (N) fp32 = -log p[target]
// on counted positions (mask 1), 0 on excluded ones (whose target is never read).
// When write_grad: logits is overwritten IN PLACE with dlogits = scale · (p − onehot(target))
// on counted positions, 0 on excluded positions and on padding columns (the probabilities are
// never stored). Softmax in fp32.
absl::Status SoftmaxCrossEntropy(bf16* logits, float* losses, const int32_t* targets,
                                 const uint8_t* mask, float scale, bool write_grad, int N, int V,
                                 int Vp, cudaStream_t stream);

}  // namespace belay::kernels::cuda
