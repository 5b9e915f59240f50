// Tests for the CPU rotary position embedding against a complex-number reference in double.
#include "kernels/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <cstring>
#include <numbers>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// One rotation per element: cos/sin rounded to fp32 and two products; angles are exact in double.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-5;

// Apertus pre-training: theta 500,000 with Llama-3 scaling factor 8 (low 1, high 4, 8192).
RopeParams ApertusRope() {
  RopeParams p;
  p.theta = 500000.0;
  p.factor = 8.0;
  p.low_freq_factor = 1.0;
  p.high_freq_factor = 4.0;
  p.original_context = 8192;
  return p;
}

std::vector<float> InverseFrequencies(int hs, const RopeParams& p) {
  auto f = testing::Poisoned(static_cast<size_t>(hs / 2));
  RopeInverseFrequencies(f.data(), hs, p);
  return f;
}

// Pair i of a head is the complex number x[i] + j x[i + hs/2]; RoPE multiplies it by
// exp(j * pos * inv_freq[i]).
std::vector<double> ReferenceRotate(const std::vector<float>& inp, const std::vector<int32_t>& pos,
                                    int H, int hs, const std::vector<float>& inv_freq,
                                    double sign) {
  std::vector<double> out(inp.size());
  const int half = hs / 2;
  for (size_t n = 0; n < pos.size(); ++n) {
    for (int h = 0; h < H; ++h) {
      const size_t base = (n * H + h) * hs;
      for (int i = 0; i < half; ++i) {
        const std::complex<double> z(inp[base + i], inp[base + i + half]);
        const std::complex<double> r =
            z * std::polar(1.0, sign * pos[n] * static_cast<double>(inv_freq[i]));
        out[base + i] = r.real();
        out[base + i + half] = r.imag();
      }
    }
  }
  return out;
}

TEST(CpuRope, UnscaledFrequenciesArePowersOfTheta) {
  RopeParams p;
  p.theta = 10000.0;
  const auto f = InverseFrequencies(64, p);
  for (int i = 0; i < 32; ++i) {
    EXPECT_FLOAT_EQ(f[i], static_cast<float>(1.0 / std::pow(10000.0, i / 32.0))) << i;
  }
}

// Llama-3 scaling keeps the high frequencies (wavelength under 8192/4 = 2048 tokens), divides
// the low ones (wavelength over 8192) by the factor and blends those between.
TEST(CpuRope, Llama3ScalingKeepsHighDividesLowAndBlendsBetween) {
  const RopeParams p = ApertusRope();
  constexpr int hs = 128;
  const auto f = InverseFrequencies(hs, p);
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < hs / 2; ++i) {
    const double base = std::pow(500000.0, -static_cast<double>(2 * i) / hs);
    const double wavelen = 2 * std::numbers::pi / base;
    double want;
    if (wavelen < 2048) {
      want = base;
      ++kept;
    } else if (wavelen > 8192) {
      want = base / 8;
      ++divided;
    } else {
      // Wavelength 2048 blends weight 1 onto base, 8192 weight 1 onto base / 8.
      const double w = (8192 / wavelen - 1) / 3;
      want = base * (w + (1 - w) / 8);
      ++blended;
    }
    EXPECT_NEAR(f[i], want, 1e-7 * want) << i;
  }
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(CpuRope, ForwardAndBackwardRotateByThePositionAngle) {
  constexpr int N = 12, H = 3, hs = 16;
  const RopeParams p = ApertusRope();
  const auto inp = testing::Uniform(static_cast<size_t>(N) * H * hs, 1);
  // Two documents: positions restart at the second; large ids test the phase at long context.
  const std::vector<int32_t> pos = {0, 1, 2, 3, 4, 0, 1, 2, 65000, 65001, 4095, 12345};
  const auto inv_freq = InverseFrequencies(hs, p);
  auto out = testing::Poisoned(inp.size());
  RopeForward(out.data(), inp.data(), pos.data(), N, H, hs, H * hs, p);
  EXPECT_TRUE(AllClose(out, ReferenceRotate(inp, pos, H, hs, inv_freq, 1.0), kAtol, kRtol));
  auto din = testing::Poisoned(inp.size());
  RopeBackward(din.data(), inp.data(), pos.data(), N, H, hs, H * hs, p);
  EXPECT_TRUE(AllClose(din, ReferenceRotate(inp, pos, H, hs, inv_freq, -1.0), kAtol, kRtol));
}

// RoPE's point: the score of a rotated query and key depends on their distance only.
TEST(CpuRope, RotatedDotProductDependsOnRelativePositionOnly) {
  constexpr int hs = 32;
  const RopeParams p = ApertusRope();
  const auto q = testing::Uniform(hs, 2);
  const auto k = testing::Uniform(hs, 3);
  auto score = [&](int32_t qpos, int32_t kpos) {
    std::vector<float> rq(hs), rk(hs);
    RopeForward(rq.data(), q.data(), &qpos, 1, 1, hs, hs, p);
    RopeForward(rk.data(), k.data(), &kpos, 1, 1, hs, hs, p);
    return testing::Dot(rq, rk);
  };
  EXPECT_NEAR(score(7, 3), score(104, 100), 1e-5);
  EXPECT_NEAR(score(0, 0), score(3000, 3000), 1e-5);
  EXPECT_GT(std::fabs(score(7, 3) - score(7, 0)), 1e-3);  // and does depend on it
}

// Backward is the transpose of forward: <dout, R x> = <R^T dout, x>.
TEST(CpuRope, BackwardIsTheTransposeOfForward) {
  constexpr int N = 9, H = 2, hs = 8;
  const RopeParams p = ApertusRope();
  const auto x = testing::Uniform(static_cast<size_t>(N) * H * hs, 4);
  const auto dout = testing::Uniform(x.size(), 5);
  const auto pos = testing::Tokens(N, 9000, 6);
  std::vector<float> rx(x.size()), rtd(x.size());
  RopeForward(rx.data(), x.data(), pos.data(), N, H, hs, H * hs, p);
  RopeBackward(rtd.data(), dout.data(), pos.data(), N, H, hs, H * hs, p);
  EXPECT_NEAR(testing::Dot(dout, rx), testing::Dot(rtd, x), 1e-5);
}

// q and k heads are adjacent in a packed (q | k | v) row: one in-place call rotates both and
// leaves v alone; backward in place undoes it.
TEST(CpuRope, RotatesQueryAndKeyInPlaceInsidePackedRows) {
  constexpr int N = 5, NH = 4, NKV = 2, hs = 8;
  constexpr int64_t row = int64_t{NH + 2 * NKV} * hs;
  const RopeParams p = ApertusRope();
  const auto qkv = testing::Uniform(N * row, 7);
  const std::vector<int32_t> pos = {0, 1, 2, 0, 1};
  auto buf = qkv;
  RopeForward(buf.data(), buf.data(), pos.data(), N, NH + NKV, hs, row, p);
  std::vector<float> qk, want_in;
  for (int n = 0; n < N; ++n) {
    const auto* r = qkv.data() + n * row;
    want_in.insert(want_in.end(), r, r + (NH + NKV) * hs);
    const auto* b = buf.data() + n * row;
    qk.insert(qk.end(), b, b + (NH + NKV) * hs);
    EXPECT_EQ(std::memcmp(b + (NH + NKV) * hs, r + (NH + NKV) * hs, NKV * hs * sizeof(float)), 0)
        << "v of token " << n << " changed";
  }
  EXPECT_TRUE(AllClose(qk,
                       ReferenceRotate(want_in, pos, NH + NKV, hs, InverseFrequencies(hs, p), 1.0),
                       kAtol, kRtol));
  RopeBackward(buf.data(), buf.data(), pos.data(), N, NH + NKV, hs, row, p);
  EXPECT_TRUE(AllClose(buf, testing::ToDouble(qkv), 1e-6, 1e-5));
}

TEST(CpuRopeDeathTest, OddHeadSizeIsRefused) {
  const std::vector<float> x(6, 1.0f);
  std::vector<float> y(6);
  const int32_t pos = 0;
  EXPECT_DEATH(RopeForward(y.data(), x.data(), &pos, 1, 2, 3, 6, RopeParams{}), "must be even");
}

TEST(CpuRope, ResultsAreBitIdenticalForAnyThreadCount) {
  constexpr int N = 300, H = 6, hs = 64;
  const RopeParams p = ApertusRope();
  const auto inp = testing::Uniform(static_cast<size_t>(N) * H * hs, 8);
  const auto pos = testing::Tokens(N, 4096, 9);
  auto run = [&] {
    auto out = testing::Poisoned(inp.size());
    RopeForward(out.data(), inp.data(), pos.data(), N, H, hs, H * hs, p);
    auto din = testing::Poisoned(inp.size());
    RopeBackward(din.data(), inp.data(), pos.data(), N, H, hs, H * hs, p);
    out.insert(out.end(), din.begin(), din.end());
    return out;
  };
  EXPECT_TRUE(testing::SameBitsForAnyThreadCount(run));
}

}  // namespace
}  // namespace belay::kernels::cpu
