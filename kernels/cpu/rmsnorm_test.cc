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

// QK-norm in a packed (q | k | v) row: normalising the query heads in place of their row gives
// the bits of RMSNorm over the same heads gathered into a contiguous (N * NH, hs) array, and
// leaves every other value of the output unwritten.
TEST(CpuRmsNorm, HeadsInsidePackedRowsMatchTheContiguousKernel) {
  constexpr int N = 5, NH = 4, NKV = 2, hs = 16;
  constexpr int64_t W = int64_t{NH + 2 * NKV} * hs;
  const auto qkv = testing::Uniform(N * W, 60, -2.0f, 2.0f);
  const auto dout = testing::Uniform(qkv.size(), 61);
  const auto weight = testing::Uniform(hs, 62, 0.5f, 1.5f);
  auto gather = [&](const std::vector<float>& packed) {
    std::vector<float> q;
    for (int n = 0; n < N; ++n) q.insert(q.end(), &packed[n * W], &packed[n * W + NH * hs]);
    return q;
  };
  auto out = testing::Poisoned(qkv.size());
  std::vector<float> rstd(N * NH);
  RmsNormHeadsForward(out.data(), rstd.data(), qkv.data(), weight.data(), N, NH, hs, W, 1e-6f);
  const auto q = gather(qkv), gq = gather(dout);
  std::vector<float> want(q.size()), want_rstd(N * NH);
  RmsNormForward(want.data(), want_rstd.data(), q.data(), weight.data(), N * NH, hs, 1e-6f);
  EXPECT_TRUE(testing::SameBits(gather(out), want));
  EXPECT_TRUE(testing::SameBits(rstd, want_rstd));
  for (int n = 0; n < N; ++n) {
    for (int64_t i = NH * hs; i < W; ++i) EXPECT_TRUE(std::isnan(out[n * W + i])) << n << " " << i;
  }
  std::vector<float> dinp(qkv.size(), 0.0f), dw(hs, 0.0f), want_dq(q.size(), 0.0f),
      want_dw(hs, 0.0f);
  RmsNormHeadsBackward(dinp.data(), dw.data(), dout.data(), qkv.data(), weight.data(), rstd.data(),
                       N, NH, hs, W);
  RmsNormBackward(want_dq.data(), want_dw.data(), gq.data(), q.data(), weight.data(),
                  want_rstd.data(), N * NH, hs);
  EXPECT_TRUE(testing::SameBits(gather(dinp), want_dq));
  EXPECT_TRUE(testing::SameBits(dw, want_dw));
  for (int n = 0; n < N; ++n) {
    for (int64_t i = NH * hs; i < W; ++i) EXPECT_EQ(dinp[n * W + i], 0.0f) << n << " " << i;
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
