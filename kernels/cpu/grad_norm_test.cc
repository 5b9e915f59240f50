// Tests for the CPU gradient norm, scaling and clip factor.
#include "kernels/grad_norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

TEST(CpuGradNorm, SumOfSquaresMatchesDoubleReferenceAcrossBlockEdges) {
  for (int64_t n : {0, 1, 4095, 4096, 4097, 100003}) {
    const auto g = testing::Uniform(static_cast<size_t>(n), 1, -3.0f, 3.0f);
    double ref = 0;
    for (float x : g) ref += static_cast<double>(x) * x;
    // Double accumulation of squares of floats: the order only moves the last few bits.
    EXPECT_NEAR(SumOfSquares(g.data(), n), ref, 1e-12 * ref) << "n " << n;
  }
}

TEST(CpuGradNorm, SumOfSquaresIsBitIdenticalForAnyThreadCount) {
  constexpr int64_t n = 1000003;
  const auto g = testing::Uniform(n, 2, -3.0f, 3.0f);
  auto run = [&g] { return SumOfSquares(g.data(), n); };
  const double one = testing::WithThreads(1, run);
  for (int threads : {2, 3}) {
    const double many = testing::WithThreads(threads, run);
    EXPECT_EQ(std::memcmp(&one, &many, sizeof(double)), 0) << threads << " threads";
  }
}

TEST(CpuGradNorm, ScaleMultipliesEveryElement) {
  const auto g0 = testing::Uniform(10001, 3);
  auto g = g0;
  Scale(g.data(), static_cast<int64_t>(g.size()), 0.37f);
  for (size_t i = 0; i < g.size(); ++i) ASSERT_EQ(g[i], g0[i] * 0.37f) << i;
}

TEST(CpuGradNorm, ClipFactorFollowsClipGradNorm) {
  EXPECT_EQ(ClipFactor(10.0, 0.0), 1.0f);   // clipping off
  EXPECT_EQ(ClipFactor(10.0, -1.0), 1.0f);  // clipping off
  EXPECT_EQ(ClipFactor(0.5, 1.0), 1.0f);    // under the limit: untouched
  EXPECT_EQ(ClipFactor(0.0, 1.0), 1.0f);    // zero gradient: no division by zero
  EXPECT_LT(ClipFactor(1.0, 1.0), 1.0f);    // at the limit the +1e-6 already scales down
  EXPECT_FLOAT_EQ(ClipFactor(4.0, 1.0), static_cast<float>(1.0 / (4.0 + 1e-6)));
  EXPECT_NEAR(ClipFactor(2.0, 1.0), 0.5, 1e-6);
  EXPECT_EQ(ClipFactor(std::numeric_limits<double>::infinity(), 1.0), 0.0f);
  EXPECT_TRUE(std::isnan(ClipFactor(std::numeric_limits<double>::quiet_NaN(), 1.0)));
}

}  // namespace
}  // namespace belay::kernels::cpu
