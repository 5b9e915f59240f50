// Linear layer: out = inp · weightᵀ + bias (weight stored (OC,C) as torch.nn.Linear).
#pragma once

namespace belay::kernels::cpu {

// out (N,OC); inp (N,C); weight (OC,C); bias (OC) or null. Overwrites out.
// Both passes use OpenBLAS sgemm: repeatable bit for bit at a fixed OpenBLAS thread count
// (OPENBLAS_NUM_THREADS for the pthread build, not omp_set_num_threads), not across counts.
// The bias gradient is summed by belay in a fixed order and ignores the thread count.
void MatmulForward(float* out, const float* inp, const float* weight, const float* bias, int N,
                   int C, int OC);

// Accumulates (+=) into dinp (N,C), dweight (OC,C) and dbias (OC, skipped when null).
void MatmulBackward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                    const float* weight, int N, int C, int OC);

}  // namespace belay::kernels::cpu
