// Tests for the CPU linear layer (OpenBLAS sgemm) against a double reference.
#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// fp32 dot products of length <= max(C, N, OC) over O(1) values.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;

struct MatmulCase {
  int N = 10, C = 8, OC = 12;
  std::vector<float> inp, weight, bias, dout;

  explicit MatmulCase(uint32_t seed) { Init(seed); }
  void Init(uint32_t seed) {
    inp = testing::Uniform(static_cast<size_t>(N) * C, seed);
    weight = testing::Uniform(static_cast<size_t>(OC) * C, seed + 1);
    bias = testing::Uniform(static_cast<size_t>(OC), seed + 2);
    dout = testing::Uniform(static_cast<size_t>(N) * OC, seed + 3);
  }
  std::vector<float> Forward(bool with_bias) const {
    auto out = testing::Poisoned(static_cast<size_t>(N) * OC);
    MatmulForward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, C,
                  OC);
    return out;
  }
};

std::vector<double> ReferenceForward(const MatmulCase& k, bool with_bias) {
  std::vector<double> out(static_cast<size_t>(k.N) * k.OC);
  for (int n = 0; n < k.N; ++n) {
    for (int o = 0; o < k.OC; ++o) {
      double s = with_bias ? k.bias[o] : 0.0;
      for (int c = 0; c < k.C; ++c)
        s += static_cast<double>(k.inp[n * k.C + c]) * k.weight[o * k.C + c];
      out[n * k.OC + o] = s;
    }
  }
  return out;
}

TEST(CpuMatmul, ForwardComputesInputTimesWeightTransposePlusBias) {
  const MatmulCase k(1);
  EXPECT_TRUE(AllClose(k.Forward(true), ReferenceForward(k, true), kAtol, kRtol));
}

TEST(CpuMatmul, ForwardWithoutBiasOverwritesPoisonedOutput) {
  const MatmulCase k(2);
  EXPECT_TRUE(AllClose(k.Forward(false), ReferenceForward(k, false), kAtol, kRtol));
}

TEST(CpuMatmul, BackwardAccumulatesTheReferenceGradient) {
  const MatmulCase k(3);
  std::vector<double> gin(k.inp.size(), 0.0), gw(k.weight.size(), 0.0), gb(k.bias.size(), 0.0);
  for (int n = 0; n < k.N; ++n) {
    for (int o = 0; o < k.OC; ++o) {
      const double g = k.dout[n * k.OC + o];
      gb[o] += g;
      for (int c = 0; c < k.C; ++c) {
        gin[n * k.C + c] += g * k.weight[o * k.C + c];
        gw[o * k.C + c] += g * k.inp[n * k.C + c];
      }
    }
  }
  const auto dinp0 = testing::Uniform(k.inp.size(), 30);
  const auto dw0 = testing::Uniform(k.weight.size(), 31);
  const auto db0 = testing::Uniform(k.bias.size(), 32);
  auto dinp = dinp0, dw = dw0, db = db0;
  for (int calls = 1; calls <= 2; ++calls) {
    MatmulBackward(dinp.data(), dw.data(), db.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                   k.N, k.C, k.OC);
    auto want = [calls](const std::vector<float>& start, const std::vector<double>& grad) {
      std::vector<double> w(start.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = start[i] + calls * grad[i];
      return w;
    };
    EXPECT_TRUE(AllClose(dinp, want(dinp0, gin), kAtol, kRtol)) << calls << " calls";
    EXPECT_TRUE(AllClose(dw, want(dw0, gw), kAtol, kRtol)) << calls << " calls";
    EXPECT_TRUE(AllClose(db, want(db0, gb), kAtol, kRtol)) << calls << " calls";
  }
}

TEST(CpuMatmul, BackwardWithNullBiasStillComputesInputAndWeightGradients) {
  const MatmulCase k(4);
  std::vector<float> dinp(k.inp.size(), 0.0f), dw(k.weight.size(), 0.0f);
  MatmulBackward(dinp.data(), dw.data(), nullptr, k.dout.data(), k.inp.data(), k.weight.data(), k.N,
                 k.C, k.OC);
  std::vector<float> dinp_b(k.inp.size(), 0.0f), dw_b(k.weight.size(), 0.0f),
      db(k.bias.size(), 0.0f);
  MatmulBackward(dinp_b.data(), dw_b.data(), db.data(), k.dout.data(), k.inp.data(),
                 k.weight.data(), k.N, k.C, k.OC);
  EXPECT_TRUE(AllClose(dinp, testing::ToDouble(dinp_b), 0, 0));
  EXPECT_TRUE(AllClose(dw, testing::ToDouble(dw_b), 0, 0));
}

TEST(CpuMatmul, BackwardMatchesFiniteDifferences) {
  MatmulCase k(5);
  std::vector<float> dinp(k.inp.size(), 0.0f), dw(k.weight.size(), 0.0f), db(k.bias.size(), 0.0f);
  MatmulBackward(dinp.data(), dw.data(), db.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                 k.N, k.C, k.OC);
  auto loss = [&k] { return testing::Dot(k.dout, k.Forward(true)); };
  // Linear in each argument: only the fp32 rounding of the forward (~1e-6 / 2h) remains.
  constexpr float kH = 1e-2f;
  constexpr double kTol = 1e-3;
  for (size_t i : {size_t{0}, size_t{33}, k.inp.size() - 1}) {
    EXPECT_NEAR(testing::CentralDifference(k.inp, i, kH, loss), dinp[i], kTol) << "inp " << i;
  }
  for (size_t i : {size_t{1}, size_t{50}, k.weight.size() - 1}) {
    EXPECT_NEAR(testing::CentralDifference(k.weight, i, kH, loss), dw[i], kTol) << "w " << i;
  }
  for (size_t i : {size_t{0}, size_t{7}}) {
    EXPECT_NEAR(testing::CentralDifference(k.bias, i, kH, loss), db[i], kTol) << "b " << i;
  }
}

// sgemm may split its work by OpenBLAS's own thread count, so only repeatability at a fixed
// count is promised; dbias is summed by belay and must not depend on the thread count at all.
TEST(CpuMatmul, RepeatsBitForBitAndBiasGradientIgnoresThreadCount) {
  MatmulCase k(6);
  k.N = 256;
  k.C = 96;
  k.OC = 200;
  k.Init(60);
  auto run = [&k] {
    auto out = k.Forward(true);
    auto dinp = testing::Uniform(k.inp.size(), 61);
    auto dw = testing::Uniform(k.weight.size(), 62);
    auto db = testing::Uniform(k.bias.size(), 63);
    MatmulBackward(dinp.data(), dw.data(), db.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                   k.N, k.C, k.OC);
    for (const auto* v : {&dinp, &dw, &db}) out.insert(out.end(), v->begin(), v->end());
    return out;
  };
  const auto first = testing::WithThreads(2, run);
  EXPECT_TRUE(testing::SameBits(first, testing::WithThreads(2, run)));

  auto bias_grad = [&k] {
    auto db = testing::Uniform(k.bias.size(), 63);
    std::vector<float> dinp(k.inp.size(), 0.0f), dw(k.weight.size(), 0.0f);
    MatmulBackward(dinp.data(), dw.data(), db.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                   k.N, k.C, k.OC);
    return db;
  };
  EXPECT_TRUE(
      testing::SameBits(testing::WithThreads(1, bias_grad), testing::WithThreads(3, bias_grad)));
}

}  // namespace
}  // namespace belay::kernels::cpu
