// Tests for the CPU AdamW update against a double reference of torch.optim.AdamW.
#include "kernels/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// A handful of fp32 operations per element and step.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-5;
constexpr int64_t kN = 64;

TEST(CpuAdamW, ThreeStepsMatchTorchAdamWWithDecayAndBiasCorrection) {
  AdamWParams hp;
  hp.lr = 1e-2f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  hp.weight_decay = 0.1f;
  auto params = testing::Uniform(kN, 1);
  std::vector<float> m(kN, 0.0f), v(kN, 0.0f);
  auto rp = testing::ToDouble(params);
  std::vector<double> rm(kN, 0.0), rv(kN, 0.0);
  for (int64_t step = 1; step <= 3; ++step) {
    auto grads = testing::Uniform(kN, 10 + static_cast<uint32_t>(step));
    grads[0] = 0.0f;   // m = v = 0: the eps keeps the update finite (zero)
    grads[1] = 1e-6f;  // sqrt(vhat) ~ 1e-6: eps (added after the sqrt) visibly shapes the step
    hp.step = step;
    AdamWUpdate(params.data(), grads.data(), m.data(), v.data(), kN, hp);
    const double b1 = hp.beta1, b2 = hp.beta2;
    for (size_t i = 0; i < rp.size(); ++i) {
      const double g = grads[i];
      rp[i] -= static_cast<double>(hp.lr) * hp.weight_decay * rp[i];
      rm[i] = b1 * rm[i] + (1 - b1) * g;
      rv[i] = b2 * rv[i] + (1 - b2) * g * g;
      const double mhat = rm[i] / (1 - std::pow(b1, static_cast<double>(step)));
      const double vhat = rv[i] / (1 - std::pow(b2, static_cast<double>(step)));
      rp[i] -= hp.lr * mhat / (std::sqrt(vhat) + hp.eps);
    }
    EXPECT_TRUE(AllClose(params, rp, kAtol, kRtol)) << "step " << step;
    EXPECT_TRUE(AllClose(m, rm, kAtol, kRtol)) << "step " << step;
    EXPECT_TRUE(AllClose(v, rv, kAtol, kRtol)) << "step " << step;
  }
}

// With bias correction the first update is lr · g / (|g| + eps): about lr against the sign of
// the gradient, whatever the gradient's size.
TEST(CpuAdamW, FirstStepMovesEachParameterByLearningRate) {
  AdamWParams hp;
  hp.lr = 1e-3f;
  auto params = testing::Uniform(kN, 2);
  const auto before = params;
  auto grads = testing::Uniform(kN, 3, 0.01f, 5.0f);
  for (size_t i = 0; i < grads.size(); i += 2) grads[i] = -grads[i];
  std::vector<float> m(kN, 0.0f), v(kN, 0.0f);
  AdamWUpdate(params.data(), grads.data(), m.data(), v.data(), kN, hp);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_NEAR(before[i] - params[i], grads[i] > 0 ? 1e-3 : -1e-3, 1e-6) << i;
  }
}

TEST(CpuAdamW, ResultsAreBitIdenticalForAnyThreadCount) {
  constexpr int64_t n = 100003;
  AdamWParams hp;
  hp.lr = 3e-4f;
  hp.weight_decay = 0.1f;
  hp.step = 7;
  auto run = [&] {
    auto params = testing::Uniform(n, 4);
    auto m = testing::Uniform(n, 5);
    auto v = testing::Uniform(n, 6, 0.0f, 1.0f);
    const auto grads = testing::Uniform(n, 7);
    AdamWUpdate(params.data(), grads.data(), m.data(), v.data(), n, hp);
    params.insert(params.end(), m.begin(), m.end());
    params.insert(params.end(), v.begin(), v.end());
    return params;
  };
  const auto one = testing::WithThreads(1, run);
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(3, run)));
}

}  // namespace
}  // namespace belay::kernels::cpu
