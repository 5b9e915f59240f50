// Tests for the CPU causal self-attention against a double reference and finite differences.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// fp32 dot products over the head size and softmax sums over T keys, O(1) values.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;

struct AttentionCase {
  int B = 2, T = 5, C = 8, NH = 2;
  std::vector<float> qkv, dout;

  explicit AttentionCase(uint32_t seed) { Init(seed); }
  void Init(uint32_t seed) {
    qkv = testing::Uniform(static_cast<size_t>(B) * T * 3 * C, seed, -2.0f, 2.0f);
    dout = testing::Uniform(static_cast<size_t>(B) * T * C, seed + 1);
  }
  size_t AttSize() const { return static_cast<size_t>(B) * NH * T * T; }
  std::vector<float> Forward(std::vector<float>* att_out = nullptr) const {
    auto out = testing::Poisoned(dout.size());
    auto att = testing::Poisoned(AttSize());
    AttentionForward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    if (att_out != nullptr) *att_out = att;
    return out;
  }
  void Backward(std::vector<float>& dqkv, const std::vector<float>& att) const {
    auto scratch = testing::Poisoned(AttSize());  // contents on entry must not matter
    AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), B, T, C,
                      NH);
  }
};

struct Reference {
  std::vector<double> out, att, dqkv;
};

Reference ReferenceAttention(const AttentionCase& k) {
  const int hs = k.C / k.NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  Reference r{std::vector<double>(k.dout.size(), 0.0), std::vector<double>(k.AttSize(), 0.0),
              std::vector<double>(k.qkv.size(), 0.0)};
  auto at = [&k](int b, int t, int part, int h, int i) {  // index into qkv (part 0 q, 1 k, 2 v)
    return ((static_cast<size_t>(b) * k.T + t) * 3 + part) * k.C + h * (k.C / k.NH) + i;
  };
  for (int b = 0; b < k.B; ++b) {
    for (int h = 0; h < k.NH; ++h) {
      for (int t = 0; t < k.T; ++t) {
        double* a = &r.att[((static_cast<size_t>(b) * k.NH + h) * k.T + t) * k.T];
        double maxv = -INFINITY, sum = 0;
        for (int s = 0; s <= t; ++s) {
          for (int i = 0; i < hs; ++i)
            a[s] += scale * k.qkv[at(b, t, 0, h, i)] * k.qkv[at(b, s, 1, h, i)];
          maxv = std::max(maxv, a[s]);
        }
        for (int s = 0; s <= t; ++s) sum += (a[s] = std::exp(a[s] - maxv));
        for (int s = 0; s <= t; ++s) a[s] /= sum;
        const size_t o = (static_cast<size_t>(b) * k.T + t) * k.C + h * hs;
        std::vector<double> da(static_cast<size_t>(t) + 1, 0.0);
        for (int s = 0; s <= t; ++s) {
          for (int i = 0; i < hs; ++i) {
            r.out[o + i] += a[s] * k.qkv[at(b, s, 2, h, i)];
            da[s] += static_cast<double>(k.dout[o + i]) * k.qkv[at(b, s, 2, h, i)];
            r.dqkv[at(b, s, 2, h, i)] += a[s] * k.dout[o + i];
          }
        }
        double adot = 0;
        for (int s = 0; s <= t; ++s) adot += a[s] * da[s];
        for (int s = 0; s <= t; ++s) {
          const double dpre = a[s] * (da[s] - adot) * scale;
          for (int i = 0; i < hs; ++i) {
            r.dqkv[at(b, t, 0, h, i)] += dpre * k.qkv[at(b, s, 1, h, i)];
            r.dqkv[at(b, s, 1, h, i)] += dpre * k.qkv[at(b, t, 0, h, i)];
          }
        }
      }
    }
  }
  return r;
}

TEST(CpuAttention, ForwardIsCausalScaledSoftmaxAttention) {
  const AttentionCase k(1);
  const Reference ref = ReferenceAttention(k);
  std::vector<float> att;
  const auto out = k.Forward(&att);
  EXPECT_TRUE(AllClose(out, ref.out, kAtol, kRtol));
  EXPECT_TRUE(AllClose(att, ref.att, kAtol, kRtol));  // includes the exact zeros above the diagonal
  for (size_t row = 0; row < att.size() / k.T; ++row) {
    const size_t t = row % k.T;
    for (size_t s = t + 1; s < static_cast<size_t>(k.T); ++s) EXPECT_EQ(att[row * k.T + s], 0.0f);
  }
}

TEST(CpuAttention, BackwardAccumulatesTheReferenceGradient) {
  const AttentionCase k(2);
  const Reference ref = ReferenceAttention(k);
  std::vector<float> att;
  k.Forward(&att);
  const auto dqkv0 = testing::Uniform(k.qkv.size(), 20);
  auto dqkv = dqkv0;
  for (int calls = 1; calls <= 2; ++calls) {
    k.Backward(dqkv, att);
    std::vector<double> want(dqkv0.size());
    for (size_t i = 0; i < want.size(); ++i) want[i] = dqkv0[i] + calls * ref.dqkv[i];
    EXPECT_TRUE(AllClose(dqkv, want, kAtol, kRtol)) << calls << " calls";
  }
}

TEST(CpuAttention, BackwardMatchesFiniteDifferences) {
  AttentionCase k(3);
  std::vector<float> att;
  k.Forward(&att);
  std::vector<float> dqkv(k.qkv.size(), 0.0f);
  k.Backward(dqkv, att);
  auto loss = [&k] { return testing::Dot(k.dout, k.Forward()); };
  // Step 1e-2: truncation O(h^2) and fp32 noise of the loss / 2h both stay well below 2e-3.
  const size_t row = static_cast<size_t>(3 * k.C);                  // (b 0, t 1)
  const size_t last = k.qkv.size() - 3 * static_cast<size_t>(k.C);  // (b 1, t T-1)
  for (size_t i :
       {row + 1, row + k.C + 6, row + 2 * k.C + 3, last + 4, last + k.C + 2, last + 2 * k.C + 7,
        static_cast<size_t>(k.C)}) {  // q, k, v of two rows; k of t 0
    EXPECT_NEAR(testing::CentralDifference(k.qkv, i, 1e-2f, loss), dqkv[i], 2e-3) << "qkv " << i;
  }
}

TEST(CpuAttention, ResultsAreBitIdenticalForAnyThreadCount) {
  AttentionCase k(4);
  k.B = 2;
  k.T = 64;
  k.C = 64;
  k.NH = 4;
  k.Init(40);
  auto run = [&k] {
    std::vector<float> att;
    auto out = k.Forward(&att);
    auto dqkv = testing::Uniform(k.qkv.size(), 41);
    k.Backward(dqkv, att);
    out.insert(out.end(), att.begin(), att.end());
    out.insert(out.end(), dqkv.begin(), dqkv.end());
    return out;
  };
  const auto one = testing::WithThreads(1, run);
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(3, run)));
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(2, run)));
}

}  // namespace
}  // namespace belay::kernels::cpu
