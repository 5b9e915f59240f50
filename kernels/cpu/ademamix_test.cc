// Tests for the CPU AdEMAMix update and schedulers against a double reference of the paper's
// algorithm (the schedulers in their half-life form, as the reference code writes them).
#include "kernels/ademamix.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// A handful of fp32 operations per element and step.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-5;
constexpr int64_t kN = 64;

// The EMA rate whose half-life (in steps, plus one) interpolates linearly between beta1's and
// beta3's: the paper's beta3 scheduler written through half-lives.
double HalfLifeBeta3(int64_t step, int64_t warmup, double beta1, double beta3) {
  if (step >= warmup) return beta3;
  auto half_life = [](double beta) { return std::log(0.5) / std::log(beta) - 1; };
  const double a = static_cast<double>(step) / warmup;
  const double h = (1 - a) * half_life(beta1) + a * half_life(beta3);
  return std::pow(0.5, 1 / (h + 1));
}

// Apertus: alpha 8, beta3 0.9999, both warmed up over 100,000 steps.
TEST(CpuAdemamix, SchedulersWarmAlphaLinearlyAndBeta3ByHalfLife) {
  AdemamixParams p;
  p.alpha_warmup = p.beta3_warmup = 100000;
  for (int64_t step : {0, 1, 100, 25000, 50000, 99999, 100000, 250000}) {
    p.step = step;
    EXPECT_NEAR(AdemamixAlpha(p), 8.0 * std::min<double>(1.0, step / 100000.0), 1e-12) << step;
    EXPECT_NEAR(AdemamixBeta3(p), HalfLifeBeta3(step, 100000, p.beta1, p.beta3), 1e-12) << step;
  }
  p.step = 0;
  EXPECT_NEAR(AdemamixBeta3(p), p.beta1, 1e-7);  // starts at beta1
  p.step = 50000;
  EXPECT_GT(AdemamixBeta3(p), 0.999);   // half way in half-life is well past half way in beta
  p.alpha_warmup = p.beta3_warmup = 0;  // no warmup: the final values from the first step
  p.step = 1;
  EXPECT_EQ(AdemamixAlpha(p), 8.0);
  EXPECT_EQ(AdemamixBeta3(p), static_cast<double>(p.beta3));
}

TEST(CpuAdemamix, StepsMatchTheAlgorithmThroughAndAfterWarmup) {
  AdemamixParams hp;
  hp.lr = 1e-2f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.999f;
  hp.beta3 = 0.9999f;
  hp.alpha = 8.0f;
  hp.weight_decay = 0.1f;
  hp.alpha_warmup = 4;
  hp.beta3_warmup = 5;
  auto params = testing::Uniform(kN, 1);
  std::vector<float> mf(kN, 0.0f), ms(kN, 0.0f), v(kN, 0.0f);
  auto rp = testing::ToDouble(params);
  std::vector<double> rmf(kN, 0.0), rms(kN, 0.0), rv(kN, 0.0);
  const double b1 = hp.beta1, b2 = hp.beta2;
  for (int64_t step = 1; step <= 7; ++step) {
    auto grads = testing::Uniform(kN, 10 + static_cast<uint32_t>(step));
    grads[0] = 0.0f;  // all states 0: eps keeps the update finite (decay only)
    hp.step = step;
    AdemamixUpdate(params.data(), grads.data(), mf.data(), ms.data(), v.data(), kN, hp);
    const double alpha = hp.alpha * std::min(1.0, static_cast<double>(step) / hp.alpha_warmup);
    const double b3 = HalfLifeBeta3(step, hp.beta3_warmup, b1, hp.beta3);
    for (size_t i = 0; i < rp.size(); ++i) {
      const double g = grads[i];
      rmf[i] = b1 * rmf[i] + (1 - b1) * g;
      rms[i] = b3 * rms[i] + (1 - b3) * g;
      rv[i] = b2 * rv[i] + (1 - b2) * g * g;
      const double mhat = rmf[i] / (1 - std::pow(b1, static_cast<double>(step)));
      const double vhat = rv[i] / (1 - std::pow(b2, static_cast<double>(step)));
      rp[i] -= hp.lr * ((mhat + alpha * rms[i]) / (std::sqrt(vhat) + hp.eps) +
                        static_cast<double>(hp.weight_decay) * rp[i]);
    }
    EXPECT_TRUE(AllClose(params, rp, kAtol, kRtol)) << "step " << step;
    EXPECT_TRUE(AllClose(mf, rmf, kAtol, kRtol)) << "step " << step;
    EXPECT_TRUE(AllClose(ms, rms, kAtol, kRtol)) << "step " << step;
    EXPECT_TRUE(AllClose(v, rv, kAtol, kRtol)) << "step " << step;
  }
}

// With the slow EMA weighted 0 the update is AdamW's (decoupled decay of the old parameter).
TEST(CpuAdemamix, WithAlphaZeroItIsAdamW) {
  AdemamixParams hp;
  hp.lr = 1e-3f;
  hp.alpha = 0.0f;
  hp.weight_decay = 0.1f;
  AdamWParams adamw;
  adamw.lr = hp.lr;
  adamw.beta1 = hp.beta1;
  adamw.beta2 = hp.beta2;
  adamw.eps = hp.eps;
  adamw.weight_decay = hp.weight_decay;
  auto p1 = testing::Uniform(kN, 2);
  auto p2 = p1;
  std::vector<float> mf(kN, 0.0f), ms(kN, 0.0f), v1(kN, 0.0f), m(kN, 0.0f), v2(kN, 0.0f);
  for (int64_t step = 1; step <= 3; ++step) {
    const auto grads = testing::Uniform(kN, 20 + static_cast<uint32_t>(step));
    hp.step = adamw.step = step;
    AdemamixUpdate(p1.data(), grads.data(), mf.data(), ms.data(), v1.data(), kN, hp);
    AdamWUpdate(p2.data(), grads.data(), m.data(), v2.data(), kN, adamw);
    EXPECT_TRUE(AllClose(p1, testing::ToDouble(p2), kAtol, kRtol)) << "step " << step;
  }
}

TEST(CpuAdemamix, ResultsAreBitIdenticalForAnyThreadCount) {
  constexpr int64_t n = 100003;
  AdemamixParams hp;
  hp.lr = 3e-4f;
  hp.weight_decay = 0.1f;
  hp.step = 7;
  hp.alpha_warmup = hp.beta3_warmup = 100;
  auto run = [&] {
    auto params = testing::Uniform(n, 4);
    auto mf = testing::Uniform(n, 5);
    auto ms = testing::Uniform(n, 6);
    auto v = testing::Uniform(n, 7, 0.0f, 1.0f);
    const auto grads = testing::Uniform(n, 8);
    AdemamixUpdate(params.data(), grads.data(), mf.data(), ms.data(), v.data(), n, hp);
    for (const auto* s : {&mf, &ms, &v}) params.insert(params.end(), s->begin(), s->end());
    return params;
  };
  EXPECT_TRUE(testing::SameBitsForAnyThreadCount(run));
}

}  // namespace
}  // namespace belay::kernels::cpu
