// AdEMAMix on the GPU over fp32 master weights (reference: kernels/ademamix.h, whose
// AdemamixParams it takes), optionally writing the bf16 working copy.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/ademamix.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda {

// Updates master[0..n) in place from grads and the three states m_fast, m_slow, v (fp32, in
// place) with the CPU reference's arithmetic; alpha(t), beta3(t) and the bias corrections are
// computed on the host by the reference's functions (cpu::AdemamixAlpha, cpu::AdemamixBeta3).
// Writes params[i] = bf16(master[i]) when params is non-null.
absl::Status AdemamixUpdate(float* master, bf16* params, const float* grads, float* m_fast,
                            float* m_slow, float* v, int64_t n, const cpu::AdemamixParams& p,
                            cudaStream_t stream);

}  // namespace belay::kernels::cuda
