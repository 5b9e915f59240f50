// Tests for the CPU token + position embedding against a double reference.
#include "kernels/encoder.h"

#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// fp32 adds of fp32 inputs: within one rounding of the exact double result.
constexpr double kAtol = 1e-6;
constexpr double kRtol = 1e-6;

struct EncoderCase {
  int B = 2, T = 5, C = 8, Vp = 16;
  std::vector<int32_t> tokens;
  std::vector<float> wte, wpe, dout;

  explicit EncoderCase(uint32_t seed, int vocab = 11) {
    tokens = testing::Tokens(static_cast<size_t>(B) * T, vocab, seed);
    tokens[7] = tokens[2];  // at least one token seen at two positions
    tokens[9] = tokens[2];
    wte = testing::Uniform(static_cast<size_t>(Vp) * C, seed + 1);
    wpe = testing::Uniform(static_cast<size_t>(T) * C, seed + 2);
    dout = testing::Uniform(static_cast<size_t>(B) * T * C, seed + 3);
  }
  std::vector<float> Forward() const {
    auto out = testing::Poisoned(dout.size());
    EncoderForward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return out;
  }
};

TEST(CpuEncoder, ForwardAddsTokenAndPositionRows) {
  EncoderCase k(1);
  std::vector<double> ref(k.dout.size());
  for (int b = 0; b < k.B; ++b) {
    for (int t = 0; t < k.T; ++t) {
      for (int c = 0; c < k.C; ++c) {
        ref[(b * k.T + t) * k.C + c] =
            static_cast<double>(k.wte[k.tokens[b * k.T + t] * k.C + c]) + k.wpe[t * k.C + c];
      }
    }
  }
  EXPECT_TRUE(AllClose(k.Forward(), ref, kAtol, kRtol));
}

TEST(CpuEncoder, BackwardAccumulatesEveryPositionIntoItsRows) {
  EncoderCase k(2);
  const auto dwte0 = testing::Uniform(k.wte.size(), 20);
  const auto dwpe0 = testing::Uniform(k.wpe.size(), 21);
  std::vector<double> gwte(k.wte.size(), 0.0), gwpe(k.wpe.size(), 0.0);  // one call's share
  for (int b = 0; b < k.B; ++b) {
    for (int t = 0; t < k.T; ++t) {
      for (int c = 0; c < k.C; ++c) {
        const double g = k.dout[(b * k.T + t) * k.C + c];
        gwte[k.tokens[b * k.T + t] * k.C + c] += g;
        gwpe[t * k.C + c] += g;
      }
    }
  }
  auto dwte = dwte0;
  auto dwpe = dwpe0;
  for (int calls = 1; calls <= 2; ++calls) {
    EncoderBackward(dwte.data(), dwpe.data(), k.dout.data(), k.tokens.data(), k.B, k.T, k.C);
    std::vector<double> want_wte(k.wte.size()), want_wpe(k.wpe.size());
    for (size_t i = 0; i < want_wte.size(); ++i) want_wte[i] = dwte0[i] + calls * gwte[i];
    for (size_t i = 0; i < want_wpe.size(); ++i) want_wpe[i] = dwpe0[i] + calls * gwpe[i];
    EXPECT_TRUE(AllClose(dwte, want_wte, 1e-5, 1e-5)) << "after " << calls << " calls";
    EXPECT_TRUE(AllClose(dwpe, want_wpe, 1e-5, 1e-5)) << "after " << calls << " calls";
  }
}

TEST(CpuEncoder, BackwardMatchesFiniteDifferences) {
  EncoderCase k(3);
  std::vector<float> dwte(k.wte.size(), 0.0f), dwpe(k.wpe.size(), 0.0f);
  EncoderBackward(dwte.data(), dwpe.data(), k.dout.data(), k.tokens.data(), k.B, k.T, k.C);
  auto loss = [&k] { return testing::Dot(k.dout, k.Forward()); };
  // The loss is linear in the weights, so only fp32 rounding of the forward separates them.
  const size_t repeated_row = static_cast<size_t>(k.tokens[2]) * k.C;
  for (size_t i : {repeated_row, repeated_row + 5, static_cast<size_t>(k.tokens[0]) * k.C + 3}) {
    EXPECT_NEAR(testing::CentralDifference(k.wte, i, 1e-2f, loss), dwte[i], 1e-3) << "wte " << i;
  }
  for (size_t i : {size_t{0}, size_t{13}, k.wpe.size() - 1}) {
    EXPECT_NEAR(testing::CentralDifference(k.wpe, i, 1e-2f, loss), dwpe[i], 1e-3) << "wpe " << i;
  }
}

TEST(CpuEncoder, ResultsAreBitIdenticalForAnyThreadCount) {
  EncoderCase k(4, /*vocab=*/7);  // few tokens: each row gathers many positions
  k.B = 4;
  k.T = 64;
  k.C = 48;
  k.tokens = testing::Tokens(static_cast<size_t>(k.B) * k.T, 7, 40);
  k.wte = testing::Uniform(static_cast<size_t>(k.Vp) * k.C, 41);
  k.wpe = testing::Uniform(static_cast<size_t>(k.T) * k.C, 42);
  k.dout = testing::Uniform(static_cast<size_t>(k.B) * k.T * k.C, 43);
  auto run = [&k] {
    auto out = k.Forward();
    auto dwte = testing::Uniform(k.wte.size(), 44);
    auto dwpe = testing::Uniform(k.wpe.size(), 45);
    EncoderBackward(dwte.data(), dwpe.data(), k.dout.data(), k.tokens.data(), k.B, k.T, k.C);
    out.insert(out.end(), dwte.begin(), dwte.end());
    out.insert(out.end(), dwpe.begin(), dwpe.end());
    return out;
  };
  const auto one = testing::WithThreads(1, run);
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(3, run)));
  EXPECT_TRUE(testing::SameBits(one, testing::WithThreads(2, run)));
}

}  // namespace
}  // namespace belay::kernels::cpu
