// AdEMAMix on the GPU against the CPU reference, through the alpha and beta3 warmups.
#include "kernels/cuda/ademamix.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"

namespace belay::kernels::cuda {
namespace {

using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::Stream;

// As for AdamW: the reference's IEEE operations in its order, with its host-computed schedules
// and bias corrections; a few fp32 ulps allowed for a CPU build that contracts into FMAs.
constexpr double kAtol = 1e-9, kRtol = 1e-6;

struct State {
  std::vector<float> master, grads, m_fast, m_slow, v;

  State(int64_t n, uint32_t seed) {
    const auto size = static_cast<size_t>(n);
    master = Uniform(size, seed);
    grads = Uniform(size, seed + 1, -0.1f, 0.1f);
    m_fast = Uniform(size, seed + 2, -0.01f, 0.01f);
    m_slow = Uniform(size, seed + 3, -0.01f, 0.01f);
    v = Uniform(size, seed + 4, 0.0f, 1e-3f);
  }
};

// Apertus' hyperparameters (beta1 0.9, beta2 0.999, beta3 0.9999, alpha 8: the defaults) with
// warmups of 100 steps for alpha and beta3.
cpu::AdemamixParams Apertus(int64_t step) {
  return {
      .lr = 3e-4f, .weight_decay = 0.1f, .step = step, .alpha_warmup = 100, .beta3_warmup = 100};
}

// `steps` updates from `first` on, each with a fresh gradient, on both sides.
void CheckSteps(int64_t n, int64_t first, int steps, bool with_params, uint32_t seed,
                float weight_decay) {
  SCOPED_TRACE("n=" + std::to_string(n) + " from step " + std::to_string(first));
  State s(n, seed);
  DeviceBuffer<float> master(s.master), m_fast(s.m_fast), m_slow(s.m_slow), v(s.v);
  DeviceBuffer<bf16> params(static_cast<size_t>(n));
  Stream stream;
  for (int k = 0; k < steps; ++k) {
    cpu::AdemamixParams p = Apertus(first + k);
    p.weight_decay = weight_decay;
    s.grads = Uniform(static_cast<size_t>(n), seed + 10 + static_cast<uint32_t>(k), -0.1f, 0.1f);
    DeviceBuffer<float> grads(s.grads);
    const absl::Status st =
        AdemamixUpdate(master.get(), with_params ? params.get() : nullptr, grads.get(),
                       m_fast.get(), m_slow.get(), v.get(), n, p, stream.get());
    ASSERT_TRUE(st.ok()) << st;
    cpu::AdemamixUpdate(s.master.data(), s.grads.data(), s.m_fast.data(), s.m_slow.data(),
                        s.v.data(), n, p);
  }
  EXPECT_TRUE(AllClose(master.Download(), ToDouble(s.master), kAtol, kRtol)) << "master";
  EXPECT_TRUE(AllClose(m_fast.Download(), ToDouble(s.m_fast), kAtol, kRtol)) << "m_fast";
  EXPECT_TRUE(AllClose(m_slow.Download(), ToDouble(s.m_slow), kAtol, kRtol)) << "m_slow";
  EXPECT_TRUE(AllClose(v.Download(), ToDouble(s.v), kAtol, kRtol)) << "v";
  testing::ExpectWorkingCopy(params.Download(), s.master, with_params);
}

TEST(AdemamixCuda, FirstStepsInsideTheWarmupsMatchCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckSteps(100003, 1, 3, true, 1, 0.1f);
}

TEST(AdemamixCuda, StepsAcrossTheWarmupsEndMatchCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckSteps(1000, 98, 4, true, 2, 0.0f);  // steps 98..101: schedules reach alpha and beta3
}

TEST(AdemamixCuda, CoversAllElementsBeyondOneGridAndSkipsNullParams) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckSteps(3'000'017, 5000, 1, false, 3, 0.1f);  // more elements than the grid has threads
}

TEST(AdemamixCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const int64_t n = 70001;
  const State s(n, 4);
  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> master(s.master), grads(s.grads), m_fast(s.m_fast), m_slow(s.m_slow),
        v(s.v);
    Stream stream;
    ASSERT_TRUE(AdemamixUpdate(master.get(), nullptr, grads.get(), m_fast.get(), m_slow.get(),
                               v.get(), n, Apertus(50), stream.get())
                    .ok());
    runs.push_back(master.Download());
    runs.push_back(m_slow.Download());
  }
  EXPECT_TRUE(cpu::testing::SameBits(runs[0], runs[2]));
  EXPECT_TRUE(cpu::testing::SameBits(runs[1], runs[3]));
}

// The launcher checks its arguments before touching the device, so this runs anywhere.
TEST(AdemamixCuda, RejectsBadArguments) {
  float f[8] = {};
  cpu::AdemamixParams p = Apertus(1);
  const absl::Status negative = AdemamixUpdate(f, nullptr, f, f, f, f, -1, p, nullptr);
  EXPECT_NE(negative.message().find("n must be >= 0"), std::string::npos) << negative;
  p.step = 0;
  const absl::Status step0 = AdemamixUpdate(f, nullptr, f, f, f, f, 8, p, nullptr);
  EXPECT_NE(step0.message().find("step must be >= 1"), std::string::npos) << step0;
  p.step = 1;
  EXPECT_EQ(AdemamixUpdate(f, nullptr, f, f, nullptr, f, 8, p, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace belay::kernels::cuda
