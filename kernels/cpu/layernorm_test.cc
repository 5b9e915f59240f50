// Tests for the CPU LayerNorm against a double reference and finite differences.
#include "kernels/layernorm.h"

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

struct LayerNormCase {
  int N = 10, C = 8;
  std::vector<float> inp, weight, bias, dout;

  explicit LayerNormCase(uint32_t seed) { Init(seed); }
  void Init(uint32_t seed) {
    inp = testing::Uniform(static_cast<size_t>(N) * C, seed, -2.0f, 3.0f);  // mean != 0
    weight = testing::Uniform(static_cast<size_t>(C), seed + 1, 0.5f, 1.5f);
    bias = testing::Uniform(static_cast<size_t>(C), seed + 2);
    dout = testing::Uniform(inp.size(), seed + 3);
  }
  struct Outputs {
    std::vector<float> out, mean, rstd;
  };
  Outputs Forward() const {
    Outputs o{testing::Poisoned(inp.size()), testing::Poisoned(static_cast<size_t>(N)),
              testing::Poisoned(static_cast<size_t>(N))};
    LayerNormForward(o.out.data(), o.mean.data(), o.rstd.data(), inp.data(), weight.data(),
                     bias.data(), N, C);
    return o;
  }
};

struct Reference {
  std::vector<double> out, mean, rstd, dinp, dweight, dbias;
};

Reference ReferenceLayerNorm(const LayerNormCase& k) {
  Reference r;
  r.out.resize(k.inp.size());
  r.dinp.resize(k.inp.size());
  r.dweight.assign(static_cast<size_t>(k.C), 0.0);
  r.dbias.assign(static_cast<size_t>(k.C), 0.0);
  for (int i = 0; i < k.N; ++i) {
    const size_t row = static_cast<size_t>(i) * k.C;
    double mean = 0, var = 0;
    for (int c = 0; c < k.C; ++c) mean += k.inp[row + c];
    mean /= k.C;
    for (int c = 0; c < k.C; ++c) var += (k.inp[row + c] - mean) * (k.inp[row + c] - mean);
    var /= k.C;  // biased, as torch.nn.LayerNorm
    const double rstd = 1.0 / std::sqrt(var + 1e-5);
    r.mean.push_back(mean);
    r.rstd.push_back(rstd);
    // d/dx of w * xhat: (g - mean(g) - xhat * mean(g * xhat)) * rstd with g = w * dout.
    double gmean = 0, gxmean = 0;
    for (int c = 0; c < k.C; ++c) {
      const double xhat = (k.inp[row + c] - mean) * rstd;
      const double g = static_cast<double>(k.weight[c]) * k.dout[row + c];
      r.out[row + c] = xhat * k.weight[c] + k.bias[c];
      gmean += g / k.C;
      gxmean += g * xhat / k.C;
      r.dweight[c] += xhat * k.dout[row + c];
      r.dbias[c] += k.dout[row + c];
    }
    for (int c = 0; c < k.C; ++c) {
      const double xhat = (k.inp[row + c] - mean) * rstd;
      const double g = static_cast<double>(k.weight[c]) * k.dout[row + c];
      r.dinp[row + c] = (g - gmean - xhat * gxmean) * rstd;
    }
  }
  return r;
}

TEST(CpuLayerNorm, ForwardMatchesTorchSemantics) {
  const LayerNormCase k(1);
  const Reference ref = ReferenceLayerNorm(k);
  const auto got = k.Forward();
  EXPECT_TRUE(AllClose(got.out, ref.out, kAtol, kRtol));
  EXPECT_TRUE(AllClose(got.mean, ref.mean, kAtol, kRtol));
  EXPECT_TRUE(AllClose(got.rstd, ref.rstd, kAtol, kRtol));
}

TEST(CpuLayerNorm, BackwardAccumulatesTheReferenceGradient) {
  const LayerNormCase k(2);
  const Reference ref = ReferenceLayerNorm(k);
  const auto fwd = k.Forward();
  const auto dinp0 = testing::Uniform(k.inp.size(), 20);
  const auto dw0 = testing::Uniform(k.weight.size(), 21);
  const auto db0 = testing::Uniform(k.bias.size(), 22);
  auto dinp = dinp0, dw = dw0, db = db0;
  for (int calls = 1; calls <= 2; ++calls) {
    LayerNormBackward(dinp.data(), dw.data(), db.data(), k.dout.data(), k.inp.data(),
                      k.weight.data(), fwd.mean.data(), fwd.rstd.data(), k.N, k.C);
    EXPECT_TRUE(AllClose(dinp, testing::Accumulated(dinp0, ref.dinp, calls), kAtol, kRtol))
        << calls << " calls";
    EXPECT_TRUE(AllClose(dw, testing::Accumulated(dw0, ref.dweight, calls), kAtol, kRtol))
        << calls << " calls";
    EXPECT_TRUE(AllClose(db, testing::Accumulated(db0, ref.dbias, calls), kAtol, kRtol))
        << calls << " calls";
  }
}

TEST(CpuLayerNorm, BackwardMatchesFiniteDifferences) {
  LayerNormCase k(3);
  const auto fwd = k.Forward();
  std::vector<float> dinp(k.inp.size(), 0.0f), dw(k.weight.size(), 0.0f), db(k.bias.size(), 0.0f);
  LayerNormBackward(dinp.data(), dw.data(), db.data(), k.dout.data(), k.inp.data(), k.weight.data(),
                    fwd.mean.data(), fwd.rstd.data(), k.N, k.C);
  auto loss = [&k] { return testing::Dot(k.dout, k.Forward().out); };
  // Step 1e-2: truncation O(h^2) and fp32 noise of the loss (~1e-6) / 2h both stay < 1e-3.
  constexpr float kH = 1e-2f;
  constexpr double kTol = 2e-3;
  for (size_t i : {size_t{0}, size_t{17}, k.inp.size() - 1}) {
    EXPECT_NEAR(testing::CentralDifference(k.inp, i, kH, loss), dinp[i], kTol) << "inp " << i;
  }
  for (size_t i : {size_t{0}, size_t{5}}) {
    EXPECT_NEAR(testing::CentralDifference(k.weight, i, kH, loss), dw[i], kTol) << "w " << i;
    EXPECT_NEAR(testing::CentralDifference(k.bias, i, kH, loss), db[i], kTol) << "b " << i;
  }
}

TEST(CpuLayerNorm, ResultsAreBitIdenticalForAnyThreadCount) {
  LayerNormCase k(4);
  k.N = 96;
  k.C = 200;  // several channel blocks for dweight/dbias
  k.Init(40);
  auto run = [&k] {
    auto fwd = k.Forward();
    auto dinp = testing::Uniform(k.inp.size(), 41);
    auto dw = testing::Uniform(k.weight.size(), 42);
    auto db = testing::Uniform(k.bias.size(), 43);
    LayerNormBackward(dinp.data(), dw.data(), db.data(), k.dout.data(), k.inp.data(),
                      k.weight.data(), fwd.mean.data(), fwd.rstd.data(), k.N, k.C);
    auto all = fwd.out;
    for (const auto* v : {&fwd.mean, &fwd.rstd, &dinp, &dw, &db}) {
      all.insert(all.end(), v->begin(), v->end());
    }
    return all;
  };
  const auto one = testing::WithThreads(1, run);
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(3, run)));
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(2, run)));
}

}  // namespace
}  // namespace belay::kernels::cpu
