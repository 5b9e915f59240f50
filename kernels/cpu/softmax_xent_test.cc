// Tests for the CPU fused softmax + cross-entropy: padded vocabulary, loss mask, gradients.
#include "kernels/softmax_xent.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// One fp32 exp per element and a row sum over V O(1) terms.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-5;

struct XentCase {
  int N = 10, V = 11, Vp = 16;
  float scale = 0;
  std::vector<float> logits;
  std::vector<int32_t> targets;
  std::vector<uint8_t> mask;

  explicit XentCase(uint32_t seed) { Init(seed); }
  void Init(uint32_t seed) {
    logits = testing::Uniform(static_cast<size_t>(N) * Vp, seed, -4.0f, 4.0f);
    targets = testing::Tokens(static_cast<size_t>(N), V, seed + 1);
    mask.assign(static_cast<size_t>(N), 1);
    mask[1] = 0;
    mask[static_cast<size_t>(N) - 2] = 0;
    targets[1] = -1;  // an excluded position's target is never read (ignore-index style)
    scale = 1.0f / static_cast<float>(N - 2);
    for (int i = 0; i < N; ++i) {  // padding logits large, so using them would show
      for (int j = V; j < Vp; ++j) logits[static_cast<size_t>(i) * Vp + j] = 50.0f;
    }
  }
  struct Outputs {
    std::vector<float> losses, probs;
  };
  Outputs Forward() const {
    Outputs o{testing::Poisoned(static_cast<size_t>(N)), testing::Poisoned(logits.size())};
    SoftmaxCrossEntropyForward(o.losses.data(), o.probs.data(), logits.data(), targets.data(),
                               mask.data(), N, V, Vp);
    return o;
  }
  std::vector<float> Backward(const std::vector<float>& probs) const {
    auto d = testing::Poisoned(logits.size());  // overwritten, never accumulated
    SoftmaxCrossEntropyBackward(d.data(), probs.data(), targets.data(), mask.data(), scale, N, V,
                                Vp);
    return d;
  }
  // The batch loss whose gradient Backward returns: scale · Σ counted losses.
  double Loss() const {
    const auto losses = Forward().losses;
    double s = 0;
    for (float l : losses) s += static_cast<double>(scale) * l;
    return s;
  }
};

struct Reference {
  std::vector<double> losses, probs, dlogits;
};

Reference ReferenceXent(const XentCase& k) {
  Reference r{std::vector<double>(static_cast<size_t>(k.N), 0.0),
              std::vector<double>(k.logits.size(), 0.0), std::vector<double>(k.logits.size(), 0.0)};
  for (int i = 0; i < k.N; ++i) {
    const size_t row = static_cast<size_t>(i) * k.Vp;
    double maxv = -INFINITY, sum = 0;
    for (int j = 0; j < k.V; ++j) maxv = std::max(maxv, static_cast<double>(k.logits[row + j]));
    for (int j = 0; j < k.V; ++j) sum += std::exp(k.logits[row + j] - maxv);
    for (int j = 0; j < k.V; ++j) r.probs[row + j] = std::exp(k.logits[row + j] - maxv) / sum;
    if (k.mask[i] == 0) continue;
    r.losses[i] = -std::log(r.probs[row + k.targets[i]]);
    for (int j = 0; j < k.V; ++j) {
      r.dlogits[row + j] = k.scale * (r.probs[row + j] - (j == k.targets[i] ? 1.0 : 0.0));
    }
  }
  return r;
}

TEST(CpuSoftmaxXent, ForwardSoftmaxesRealColumnsOnlyAndZeroesMaskedLosses) {
  const XentCase k(1);
  const Reference ref = ReferenceXent(k);
  const auto got = k.Forward();
  EXPECT_TRUE(AllClose(got.probs, ref.probs, kAtol, kRtol));  // padding columns exactly 0
  EXPECT_TRUE(AllClose(got.losses, ref.losses, kAtol, kRtol));
  EXPECT_EQ(got.losses[1], 0.0f);
  EXPECT_EQ(got.losses[static_cast<size_t>(k.N) - 2], 0.0f);
}

TEST(CpuSoftmaxXent, ForwardIsStableForLargeLogits) {
  XentCase k(2);
  for (float& z : k.logits) z *= 300.0f;  // exp would overflow without the max subtraction
  const Reference ref = ReferenceXent(k);
  const auto got = k.Forward();
  EXPECT_TRUE(AllClose(got.probs, ref.probs, kAtol, kRtol));
  // Losses up to ~2400 here: fp32 log-sum-exp keeps them within a few ulps of that size.
  EXPECT_TRUE(AllClose(got.losses, ref.losses, 1e-3, kRtol));
}

TEST(CpuSoftmaxXent, BackwardOverwritesWithScaledProbsMinusOneHot) {
  const XentCase k(3);
  const Reference ref = ReferenceXent(k);
  const auto d = k.Backward(k.Forward().probs);
  EXPECT_TRUE(AllClose(d, ref.dlogits, kAtol, kRtol));
  for (int i = 0; i < k.N; ++i) {
    for (int j = 0; j < k.Vp; ++j) {
      if (k.mask[i] == 0 || j >= k.V) {
        EXPECT_EQ(d[static_cast<size_t>(i) * k.Vp + j], 0.0f) << "row " << i << " col " << j;
      }
    }
  }
}

TEST(CpuSoftmaxXent, BackwardMatchesFiniteDifferences) {
  XentCase k(4);
  const auto d = k.Backward(k.Forward().probs);
  auto loss = [&k] { return k.Loss(); };
  const size_t vp = static_cast<size_t>(k.Vp);
  const size_t t0 = static_cast<size_t>(k.targets[0]);
  // The target column, another column, a padding column, a masked row, the last row.
  for (size_t i : {t0, (t0 + 3) % static_cast<size_t>(k.V), vp - 1, vp + 2, 9 * vp + 10}) {
    EXPECT_NEAR(testing::CentralDifference(k.logits, i, 1e-2f, loss), d[i], 1e-4) << i;
  }
}

TEST(CpuSoftmaxXent, ResultsAreBitIdenticalForAnyThreadCount) {
  XentCase k(5);
  k.N = 64;
  k.V = 1000;
  k.Vp = 1024;
  k.Init(50);
  auto run = [&k] {
    auto fwd = k.Forward();
    auto all = k.Backward(fwd.probs);
    all.insert(all.end(), fwd.losses.begin(), fwd.losses.end());
    all.insert(all.end(), fwd.probs.begin(), fwd.probs.end());
    return all;
  };
  const auto one = testing::WithThreads(1, run);
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(3, run)));
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(2, run)));
}

}  // namespace
}  // namespace belay::kernels::cpu
