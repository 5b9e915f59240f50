// Tests for the CPU xIELU against a double reference written from the published formula and
// finite differences, including the gradients of the two trainable scalars.
#include "kernels/xielu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// Elementwise fp32 with one expm1f; the scalar gradients are double sums rounded once.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-5;
constexpr double kBeta = 0.5;
constexpr double kEps = -1e-6;

double Softplus(double a) { return std::log(1 + std::exp(a)); }

struct Ref {
  double y, dydx, dydap, dydan;  // dy/da_p and dy/da_n through the softplus
};

Ref RefXielu(double x, double a_p, double a_n) {
  const double alpha_p = Softplus(a_p);
  const double alpha_n = kBeta + Softplus(a_n);
  const double sig_p = 1 / (1 + std::exp(-a_p));
  const double sig_n = 1 / (1 + std::exp(-a_n));
  if (x > 0) return {alpha_p * x * x + kBeta * x, 2 * alpha_p * x + kBeta, x * x * sig_p, 0};
  const double m = std::min(x, kEps);
  return {alpha_n * std::expm1(m) - alpha_n * x + kBeta * x,
          alpha_n * ((x < kEps ? std::exp(x) : 0) - 1) + kBeta, 0, (std::expm1(m) - x) * sig_n};
}

std::vector<float> Forward(const std::vector<float>& inp, float a_p, float a_n) {
  auto out = testing::Poisoned(inp.size());
  XieluForward(out.data(), inp.data(), static_cast<int64_t>(inp.size()), a_p, a_n);
  return out;
}

// Apertus' initialisation: alpha_p = alpha_n = 0.8.
TEST(CpuXielu, RawScalarsInvertTheSoftplusMaps) {
  EXPECT_NEAR(Softplus(XieluRawAlphaP(0.8f)), 0.8, 1e-6);
  EXPECT_NEAR(kBeta + Softplus(XieluRawAlphaN(0.8f)), 0.8, 1e-6);
}

TEST(CpuXielu, ForwardMatchesThePublishedFormula) {
  auto inp = testing::Uniform(400, 1, -8.0f, 4.0f);
  inp[0] = 0.0f;    // the x <= 0 branch: 0
  inp[1] = -5e-7f;  // between eps and 0: min(x, eps) = eps
  const float a_p = XieluRawAlphaP(0.8f), a_n = XieluRawAlphaN(1.3f);
  std::vector<double> ref(inp.size());
  for (size_t i = 0; i < inp.size(); ++i) ref[i] = RefXielu(inp[i], a_p, a_n).y;
  EXPECT_TRUE(AllClose(Forward(inp, a_p, a_n), ref, kAtol, kRtol));
}

TEST(CpuXielu, BackwardAccumulatesInputAndScalarGradients) {
  const auto inp = testing::Uniform(10000, 2, -8.0f, 4.0f);  // several reduction blocks
  const auto dout = testing::Uniform(inp.size(), 3);
  const auto dinp0 = testing::Uniform(inp.size(), 4);
  const float a_p = 0.3f, a_n = -0.7f;
  std::vector<double> dx(inp.size());
  double dap = 0, dan = 0;
  for (size_t i = 0; i < inp.size(); ++i) {
    const Ref r = RefXielu(inp[i], a_p, a_n);
    dx[i] = r.dydx * dout[i];
    dap += r.dydap * dout[i];
    dan += r.dydan * dout[i];
  }
  auto dinp = dinp0;
  float da_p = 0.25f, da_n = -0.5f;
  for (int calls = 1; calls <= 2; ++calls) {
    XieluBackward(dinp.data(), &da_p, &da_n, dout.data(), inp.data(),
                  static_cast<int64_t>(inp.size()), a_p, a_n);
    EXPECT_TRUE(AllClose(dinp, testing::Accumulated(dinp0, dx, calls), kAtol, kRtol));
    EXPECT_NEAR(da_p, 0.25 + calls * dap, 1e-5 * std::fabs(dap)) << calls << " calls";
    EXPECT_NEAR(da_n, -0.5 + calls * dan, 1e-5 * std::fabs(dan)) << calls << " calls";
  }
}

TEST(CpuXielu, BackwardMatchesFiniteDifferences) {
  auto inp = testing::Uniform(300, 5, -4.0f, 3.0f);
  const auto dout = testing::Uniform(inp.size(), 6);
  std::vector<float> scalars = {XieluRawAlphaP(0.8f), XieluRawAlphaN(0.8f)};
  std::vector<float> dinp(inp.size(), 0.0f);
  float da_p = 0, da_n = 0;
  XieluBackward(dinp.data(), &da_p, &da_n, dout.data(), inp.data(),
                static_cast<int64_t>(inp.size()), scalars[0], scalars[1]);
  auto loss = [&] { return testing::Dot(dout, Forward(inp, scalars[0], scalars[1])); };
  for (size_t i : {size_t{0}, size_t{1}, size_t{150}, inp.size() - 1}) {
    EXPECT_NEAR(testing::CentralDifference(inp, i, 1e-2f, loss), dinp[i], 2e-3) << "inp " << i;
  }
  // The scalar gradients sum 300 terms: a relative tolerance.
  EXPECT_NEAR(testing::CentralDifference(scalars, 0, 1e-2f, loss), da_p, 1e-3 * std::fabs(da_p));
  EXPECT_NEAR(testing::CentralDifference(scalars, 1, 1e-2f, loss), da_n, 1e-3 * std::fabs(da_n));
}

TEST(CpuXielu, ResultsAreBitIdenticalForAnyThreadCount) {
  constexpr int64_t n = 100003;
  const auto inp = testing::Uniform(n, 7, -6.0f, 6.0f);
  const auto dout = testing::Uniform(n, 8);
  auto run = [&] {
    auto out = Forward(inp, 0.1f, 0.2f);
    auto dinp = testing::Uniform(n, 9);
    float da_p = 0, da_n = 0;
    XieluBackward(dinp.data(), &da_p, &da_n, dout.data(), inp.data(), n, 0.1f, 0.2f);
    out.insert(out.end(), dinp.begin(), dinp.end());
    out.push_back(da_p);
    out.push_back(da_n);
    return out;
  };
  EXPECT_TRUE(testing::SameBitsForAnyThreadCount(run));
}

}  // namespace
}  // namespace belay::kernels::cpu
