// Tests for the CPU GELU (tanh approximation) against a double reference.
#include "kernels/gelu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// Elementwise fp32 with one tanhf: a few ulps, plus an absolute floor near the zeros.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-5;
constexpr int64_t kN = 300;

double RefGelu(double x) {
  const double s = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(s * (x + 0.044715 * x * x * x)));
}

double RefGeluGrad(double x) {
  const double s = std::sqrt(2.0 / std::numbers::pi);
  const double th = std::tanh(s * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * 0.044715 * x * x);
}

std::vector<float> Forward(const std::vector<float>& inp) {
  auto out = testing::Poisoned(inp.size());
  GeluForward(out.data(), inp.data(), static_cast<int64_t>(inp.size()));
  return out;
}

TEST(CpuGelu, ForwardMatchesTanhApproximation) {
  const auto inp = testing::Uniform(kN, 1, -6.0f, 6.0f);
  std::vector<double> ref(inp.size());
  for (size_t i = 0; i < inp.size(); ++i) ref[i] = RefGelu(inp[i]);
  EXPECT_TRUE(AllClose(Forward(inp), ref, kAtol, kRtol));
}

TEST(CpuGelu, BackwardAccumulatesTheReferenceGradient) {
  const auto inp = testing::Uniform(kN, 2, -6.0f, 6.0f);
  const auto dout = testing::Uniform(kN, 3);
  const auto dinp0 = testing::Uniform(kN, 4);
  auto dinp = dinp0;
  for (int calls = 1; calls <= 2; ++calls) {
    GeluBackward(dinp.data(), inp.data(), dout.data(), kN);
    std::vector<double> want(inp.size());
    for (size_t i = 0; i < want.size(); ++i) {
      want[i] = dinp0[i] + calls * RefGeluGrad(inp[i]) * dout[i];
    }
    EXPECT_TRUE(AllClose(dinp, want, kAtol, kRtol)) << calls << " calls";
  }
}

TEST(CpuGelu, BackwardMatchesFiniteDifferences) {
  auto inp = testing::Uniform(kN, 5, -3.0f, 3.0f);
  const auto dout = testing::Uniform(kN, 6);
  std::vector<float> dinp(inp.size(), 0.0f);
  GeluBackward(dinp.data(), inp.data(), dout.data(), kN);
  auto loss = [&] { return testing::Dot(dout, Forward(inp)); };
  for (size_t i : {size_t{0}, size_t{1}, size_t{150}, size_t{kN - 1}}) {
    EXPECT_NEAR(testing::CentralDifference(inp, i, 1e-2f, loss), dinp[i], 1e-3) << "inp " << i;
  }
}

TEST(CpuGelu, ResultsAreBitIdenticalForAnyThreadCount) {
  constexpr int64_t n = 100003;
  const auto inp = testing::Uniform(n, 7, -6.0f, 6.0f);
  const auto dout = testing::Uniform(n, 8);
  auto run = [&] {
    auto out = Forward(inp);
    auto dinp = testing::Uniform(n, 9);
    GeluBackward(dinp.data(), inp.data(), dout.data(), n);
    out.insert(out.end(), dinp.begin(), dinp.end());
    return out;
  };
  const auto one = testing::WithThreads(1, run);
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(3, run)));
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(2, run)));
}

}  // namespace
}  // namespace belay::kernels::cpu
