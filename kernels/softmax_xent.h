// Fused softmax + cross-entropy over a padded vocabulary, with a per-position loss mask.
#pragma once

#include <cstdint>

namespace belay::kernels::cpu {

// logits, probs (N,Vp); only the first V columns are real tokens: the padding columns get
// probability 0 and are never predicted. targets (N) < V. mask (N): 1 counts the position,
// 0 excludes it (its loss is written as 0). losses (N) = -log p[target]. Probabilities are
// written for every row; the target of an excluded position is never read (it may be -1).
void SoftmaxCrossEntropyForward(float* losses, float* probs, const float* logits,
                                const int32_t* targets, const uint8_t* mask, int N, int V, int Vp);

// Overwrites dlogits (N,Vp) with scale · (probs − onehot(target)) on counted positions, 0 on
// excluded positions and on padding columns. `scale` is dLoss/dloss_i, e.g. 1 / (number of
// counted positions in the whole batch). The target of an excluded position is never read.
void SoftmaxCrossEntropyBackward(float* dlogits, const float* probs, const int32_t* targets,
                                 const uint8_t* mask, float scale, int N, int V, int Vp);

}  // namespace belay::kernels::cpu
