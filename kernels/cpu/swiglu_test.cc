// Tests for the CPU SwiGLU against a double reference and finite differences.
#include "kernels/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// Elementwise fp32 with one expf: a few ulps.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-5;
constexpr int kN = 7, kF = 40;

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

struct Reference {
  std::vector<double> out, dinp;
};

// out = gate * sigmoid(gate) * up; d/dgate = up * (sigmoid + gate * sigmoid * (1 - sigmoid)).
Reference ReferenceSwiglu(const std::vector<float>& inp, const std::vector<float>& dout) {
  Reference r{std::vector<double>(dout.size()), std::vector<double>(inp.size())};
  for (int i = 0; i < kN; ++i) {
    for (int j = 0; j < kF; ++j) {
      const double gate = inp[static_cast<size_t>(i * 2 * kF + j)];
      const double up = inp[static_cast<size_t>(i * 2 * kF + kF + j)];
      const double g = dout[static_cast<size_t>(i * kF + j)];
      const double s = Sigmoid(gate);
      r.out[static_cast<size_t>(i * kF + j)] = gate * s * up;
      r.dinp[static_cast<size_t>(i * 2 * kF + j)] = g * up * (s + gate * s * (1 - s));
      r.dinp[static_cast<size_t>(i * 2 * kF + kF + j)] = g * gate * s;
    }
  }
  return r;
}

std::vector<float> Forward(const std::vector<float>& inp) {
  auto out = testing::Poisoned(static_cast<size_t>(kN) * kF);
  SwigluForward(out.data(), inp.data(), kN, kF);
  return out;
}

TEST(CpuSwiglu, ForwardGatesTheSecondHalfWithSiluOfTheFirst) {
  const auto inp = testing::Uniform(2 * kN * kF, 1, -8.0f, 8.0f);
  const auto dout = testing::Uniform(kN * kF, 2);
  EXPECT_TRUE(AllClose(Forward(inp), ReferenceSwiglu(inp, dout).out, kAtol, kRtol));
}

TEST(CpuSwiglu, BackwardAccumulatesTheReferenceGradient) {
  const auto inp = testing::Uniform(2 * kN * kF, 3, -8.0f, 8.0f);
  const auto dout = testing::Uniform(kN * kF, 4);
  const auto dinp0 = testing::Uniform(inp.size(), 5);
  const Reference ref = ReferenceSwiglu(inp, dout);
  auto dinp = dinp0;
  for (int calls = 1; calls <= 2; ++calls) {
    SwigluBackward(dinp.data(), dout.data(), inp.data(), kN, kF);
    EXPECT_TRUE(AllClose(dinp, testing::Accumulated(dinp0, ref.dinp, calls), kAtol, kRtol))
        << calls << " calls";
  }
}

TEST(CpuSwiglu, BackwardMatchesFiniteDifferences) {
  auto inp = testing::Uniform(2 * kN * kF, 6, -3.0f, 3.0f);
  const auto dout = testing::Uniform(kN * kF, 7);
  std::vector<float> dinp(inp.size(), 0.0f);
  SwigluBackward(dinp.data(), dout.data(), inp.data(), kN, kF);
  auto loss = [&] { return testing::Dot(dout, Forward(inp)); };
  // Gates (first half of a row) and ups (second half).
  for (size_t i : {size_t{0}, size_t{39}, size_t{40}, size_t{79}, inp.size() - 1}) {
    EXPECT_NEAR(testing::CentralDifference(inp, i, 1e-2f, loss), dinp[i], 1e-3) << "inp " << i;
  }
}

TEST(CpuSwiglu, ResultsAreBitIdenticalForAnyThreadCount) {
  constexpr int N = 257, F = 300;
  const auto inp = testing::Uniform(2 * N * F, 8, -6.0f, 6.0f);
  const auto dout = testing::Uniform(N * F, 9);
  auto run = [&] {
    auto out = testing::Poisoned(static_cast<size_t>(N) * F);
    SwigluForward(out.data(), inp.data(), N, F);
    auto dinp = testing::Uniform(inp.size(), 10);
    SwigluBackward(dinp.data(), dout.data(), inp.data(), N, F);
    out.insert(out.end(), dinp.begin(), dinp.end());
    return out;
  };
  EXPECT_TRUE(testing::SameBitsForAnyThreadCount(run));
}

}  // namespace
}  // namespace belay::kernels::cpu
