// Tests for the CPU residual connection.
#include "kernels/residual.h"

#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// One fp32 add per element: within one rounding of the double sum.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-6;
constexpr int64_t kN = 80;

std::vector<float> Forward(const std::vector<float>& a, const std::vector<float>& b) {
  auto out = testing::Poisoned(a.size());
  ResidualForward(out.data(), a.data(), b.data(), static_cast<int64_t>(a.size()));
  return out;
}

TEST(CpuResidual, ForwardAddsElementwise) {
  const auto a = testing::Uniform(kN, 1), b = testing::Uniform(kN, 2);
  std::vector<double> ref(a.size());
  for (size_t i = 0; i < a.size(); ++i) ref[i] = static_cast<double>(a[i]) + b[i];
  EXPECT_TRUE(AllClose(Forward(a, b), ref, kAtol, kRtol));
}

TEST(CpuResidual, BackwardAccumulatesIntoBothInputs) {
  const auto dout = testing::Uniform(kN, 3);
  const auto da0 = testing::Uniform(kN, 4), db0 = testing::Uniform(kN, 5);
  auto da = da0, db = db0;
  for (int calls = 1; calls <= 2; ++calls) {
    ResidualBackward(da.data(), db.data(), dout.data(), kN);
    std::vector<double> want_a(da0.size()), want_b(db0.size());
    for (size_t i = 0; i < want_a.size(); ++i) {
      want_a[i] = da0[i] + calls * static_cast<double>(dout[i]);
      want_b[i] = db0[i] + calls * static_cast<double>(dout[i]);
    }
    EXPECT_TRUE(AllClose(da, want_a, kAtol, kRtol)) << calls << " calls";
    EXPECT_TRUE(AllClose(db, want_b, kAtol, kRtol)) << calls << " calls";
  }
}

TEST(CpuResidual, BackwardMatchesFiniteDifferences) {
  auto a = testing::Uniform(kN, 6), b = testing::Uniform(kN, 7);
  const auto dout = testing::Uniform(kN, 8);
  std::vector<float> da(a.size(), 0.0f), db(b.size(), 0.0f);
  ResidualBackward(da.data(), db.data(), dout.data(), kN);
  auto loss = [&] { return testing::Dot(dout, Forward(a, b)); };
  for (size_t i : {size_t{0}, size_t{41}, size_t{kN - 1}}) {
    EXPECT_NEAR(testing::CentralDifference(a, i, 1e-2f, loss), da[i], 1e-4) << "a " << i;
    EXPECT_NEAR(testing::CentralDifference(b, i, 1e-2f, loss), db[i], 1e-4) << "b " << i;
  }
}

TEST(CpuResidual, ResultsAreBitIdenticalForAnyThreadCount) {
  constexpr int64_t n = 100003;
  const auto a = testing::Uniform(n, 9), b = testing::Uniform(n, 10);
  auto run = [&] {
    auto out = Forward(a, b);
    auto da = testing::Uniform(n, 11), db = testing::Uniform(n, 12);
    ResidualBackward(da.data(), db.data(), a.data(), n);
    out.insert(out.end(), da.begin(), da.end());
    out.insert(out.end(), db.begin(), db.end());
    return out;
  };
  const auto one = testing::WithThreads(1, run);
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(3, run)));
}

}  // namespace
}  // namespace belay::kernels::cpu
