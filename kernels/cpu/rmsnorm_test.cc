// Tests for the CPU RMSNorm against a double reference and finite differences.
#include "kernels/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// fp32 row sums over C channels of O(1) values: a few ulps of the largest term.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;

struct RmsNormCase {
  int N = 10, C = 8;
  float eps = 1e-5f;
  std::vector<float> inp, weight, dout;

  explicit RmsNormCase(uint32_t seed) { Init(seed); }
  void Init(uint32_t seed) {
    inp = testing::Uniform(static_cast<size_t>(N) * C, seed, -2.0f, 3.0f);
    weight = testing::Uniform(static_cast<size_t>(C), seed + 1, 0.5f, 1.5f);
    dout = testing::Uniform(inp.size(), seed + 2);
  }
  struct Outputs {
    std::vector<float> out, rstd;
  };
  Outputs Forward() const {
    Outputs o{testing::Poisoned(inp.size()), testing::Poisoned(static_cast<size_t>(N))};
    RmsNormForward(o.out.data(), o.rstd.data(), inp.data(), weight.data(), N, C, eps);
    return o;
  }
};

struct Reference {
  std::vector<double> out, rstd, dinp, dweight;
};

// y_c = w_c x_c r with r = (sum_j x_j^2 / C + eps)^(-1/2), so
// dL/dx_c = w_c g_c r - x_c r^3 / C * sum_j w_j g_j x_j.
Reference ReferenceRmsNorm(const RmsNormCase& k) {
  Reference r;
  r.out.resize(k.inp.size());
  r.dinp.resize(k.inp.size());
  r.dweight.assign(static_cast<size_t>(k.C), 0.0);
  for (int i = 0; i < k.N; ++i) {
    const size_t row = static_cast<size_t>(i) * k.C;
    double ms = 0, wgx = 0;
    for (int c = 0; c < k.C; ++c) {
      const double x = k.inp[row + c];
      ms += x * x / k.C;
      wgx += static_cast<double>(k.weight[c]) * k.dout[row + c] * x;
    }
    const double rstd = 1.0 / std::sqrt(ms + static_cast<double>(k.eps));
    r.rstd.push_back(rstd);
    for (int c = 0; c < k.C; ++c) {
      const double x = k.inp[row + c];
      r.out[row + c] = x * rstd * k.weight[c];
      r.dinp[row + c] = static_cast<double>(k.weight[c]) * k.dout[row + c] * rstd -
                        x * rstd * rstd * rstd / k.C * wgx;
      r.dweight[c] += x * rstd * k.dout[row + c];
    }
  }
  return r;
}

TEST(CpuRmsNorm, ForwardMatchesTheDefinition) {
  const RmsNormCase k(1);
  const Reference ref = ReferenceRmsNorm(k);
  const auto got = k.Forward();
  EXPECT_TRUE(AllClose(got.out, ref.out, kAtol, kRtol));
  EXPECT_TRUE(AllClose(got.rstd, ref.rstd, kAtol, kRtol));
}

// eps sits inside the square root: with rows of tiny values it dominates the scale.
TEST(CpuRmsNorm, EpsIsAddedToTheMeanSquare) {
  RmsNormCase k(2);
  for (float& x : k.inp) x *= 1e-3f;
  for (float eps : {1e-6f, 1e-2f}) {
    k.eps = eps;
    const Reference ref = ReferenceRmsNorm(k);
    const auto got = k.Forward();
    EXPECT_TRUE(AllClose(got.out, ref.out, kAtol, kRtol)) << "eps " << eps;
    EXPECT_TRUE(AllClose(got.rstd, ref.rstd, kAtol, kRtol)) << "eps " << eps;
  }
}

TEST(CpuRmsNorm, BackwardAccumulatesTheReferenceGradient) {
  const RmsNormCase k(3);
  const Reference ref = ReferenceRmsNorm(k);
  const auto fwd = k.Forward();
  const auto dinp0 = testing::Uniform(k.inp.size(), 20);
  const auto dw0 = testing::Uniform(k.weight.size(), 21);
  auto dinp = dinp0, dw = dw0;
  for (int calls = 1; calls <= 2; ++calls) {
    RmsNormBackward(dinp.data(), dw.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                    fwd.rstd.data(), k.N, k.C);
    EXPECT_TRUE(AllClose(dinp, testing::Accumulated(dinp0, ref.dinp, calls), kAtol, kRtol))
        << calls << " calls";
    EXPECT_TRUE(AllClose(dw, testing::Accumulated(dw0, ref.dweight, calls), kAtol, kRtol))
        << calls << " calls";
  }
}

TEST(CpuRmsNorm, BackwardMatchesFiniteDifferences) {
  RmsNormCase k(4);
  const auto fwd = k.Forward();
  std::vector<float> dinp(k.inp.size(), 0.0f), dw(k.weight.size(), 0.0f);
  RmsNormBackward(dinp.data(), dw.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                  fwd.rstd.data(), k.N, k.C);
  auto loss = [&k] { return testing::Dot(k.dout, k.Forward().out); };
  // Step 1e-2: truncation O(h^2) and fp32 noise of the loss (~1e-6) / 2h both stay < 1e-3.
  constexpr float kH = 1e-2f;
  constexpr double kTol = 2e-3;
  for (size_t i : {size_t{0}, size_t{17}, k.inp.size() - 1}) {
    EXPECT_NEAR(testing::CentralDifference(k.inp, i, kH, loss), dinp[i], kTol) << "inp " << i;
  }
  for (size_t i : {size_t{0}, size_t{5}}) {
    EXPECT_NEAR(testing::CentralDifference(k.weight, i, kH, loss), dw[i], kTol) << "w " << i;
  }
}

TEST(CpuRmsNorm, ResultsAreBitIdenticalForAnyThreadCount) {
  RmsNormCase k(5);
  k.N = 96;
  k.C = 200;  // several channel blocks for dweight
  k.Init(50);
  auto run = [&k] {
    auto fwd = k.Forward();
    auto dinp = testing::Uniform(k.inp.size(), 51);
    auto dw = testing::Uniform(k.weight.size(), 52);
    RmsNormBackward(dinp.data(), dw.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                    fwd.rstd.data(), k.N, k.C);
    auto all = fwd.out;
    for (const auto* v : {&fwd.rstd, &dinp, &dw}) all.insert(all.end(), v->begin(), v->end());
    return all;
  };
  EXPECT_TRUE(testing::SameBitsForAnyThreadCount(run));
}

}  // namespace
}  // namespace belay::kernels::cpu
