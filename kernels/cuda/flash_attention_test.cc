// Fused (flash) causal attention on the GPU against the CPU reference and the materialising
// GPU version.
#include "kernels/cuda/flash_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"

namespace belay::kernels::cuda {
namespace {

using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::kBf16Eps;
using testing::RelativeError;
using testing::RoundedToBf16;
using testing::Stream;
using testing::ToBf16;
using testing::ToFloat;

struct Shape {
  int B, T, C, NH;
};

// Log-sum-exp of each row's scaled causal scores, in double: (B,NH,T).
std::vector<double> ReferenceLse(const std::vector<float>& qkv, Shape s) {
  const int HS = s.C / s.NH;
  std::vector<double> out;
  for (int b = 0; b < s.B; ++b) {
    for (int h = 0; h < s.NH; ++h) {
      for (int t = 0; t < s.T; ++t) {
        std::vector<double> x;
        double mx = -INFINITY;
        for (int u = 0; u <= t; ++u) {
          double dot = 0;
          for (int d = 0; d < HS; ++d) {
            dot += static_cast<double>(qkv[(size_t(b) * s.T + t) * 3 * s.C + h * HS + d]) *
                   qkv[(size_t(b) * s.T + u) * 3 * s.C + s.C + h * HS + d];
          }
          x.push_back(dot / std::sqrt(static_cast<double>(HS)));
          mx = std::max(mx, x.back());
        }
        double sum = 0;
        for (double v : x) sum += std::exp(v - mx);
        out.push_back(mx + std::log(sum));
      }
    }
  }
  return out;
}

void CheckFlash(Shape s, uint32_t seed, bool check_lse) {
  ASSERT_TRUE(FlashAttentionSupports(s.T, s.C, s.NH));
  const size_t B = s.B, T = s.T, C = s.C, NH = s.NH;
  const size_t btc = B * T * C, bhtt = B * NH * T * T;
  std::vector<float> qkv = RoundedToBf16(Uniform(3 * btc, seed, -2.0f, 2.0f));
  std::vector<float> dout = RoundedToBf16(Uniform(btc, seed + 1));
  std::vector<float> out(btc), att(bhtt), dqkv(3 * btc, 0.0f), scratch(bhtt);
  cpu::AttentionForward(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  cpu::AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                         s.C, s.NH);

  Stream stream;
  DeviceBuffer<bf16> d_qkv(ToBf16(qkv)), d_dout(ToBf16(dout));
  DeviceBuffer<bf16> d_out(btc), d_dqkv(3 * btc);
  DeviceBuffer<float> d_lse(B * NH * T), d_scratch(FlashAttentionBackwardScratch(s.B, s.T, s.NH));
  absl::Status st = FlashAttentionForward(d_out.get(), d_lse.get(), d_qkv.get(), s.B, s.T, s.C,
                                          s.NH, stream.get());
  ASSERT_TRUE(st.ok()) << st;
  st = FlashAttentionBackward(d_dqkv.get(), d_scratch.get(), d_dout.get(), d_qkv.get(), d_out.get(),
                              d_lse.get(), s.B, s.T, s.C, s.NH, stream.get());
  ASSERT_TRUE(st.ok()) << st;

  // out: convex combinations of v in [-2, 2]; the weights pass through bf16 once (2^-9
  // relative) before the product, the result is rounded to bf16.
  const std::vector<float> got_out = ToFloat(d_out.Download());
  EXPECT_TRUE(AllClose(got_out, ToDouble(out), 2e-2, 2 * kBf16Eps));
  const double out_err = RelativeError(got_out, out);
  const std::vector<float> got_dqkv = ToFloat(d_dqkv.Download());
  const double grad_err = RelativeError(got_dqkv, dqkv);
  std::printf("  flash B=%d T=%d C=%d NH=%d: out relative error %.2e, dqkv %.2e\n", s.B, s.T, s.C,
              s.NH, out_err, grad_err);
  EXPECT_LT(out_err, 4e-3);
  EXPECT_TRUE(AllClose(got_dqkv, ToDouble(dqkv), 5e-2, 5e-2));
  EXPECT_LT(grad_err, 1e-2);
  if (check_lse) {
    // Scores of bf16 inputs summed in fp32: the log-sum-exp within 1e-4 of the exact one.
    EXPECT_TRUE(AllClose(d_lse.Download(), ReferenceLse(qkv, s), 1e-4, 1e-5));
  }
}

TEST(FlashAttentionCuda, MatchesReferenceOnOneTile) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckFlash({1, 64, 64, 1}, 1, true);
}

TEST(FlashAttentionCuda, MatchesReferenceAcrossTilesAndHeads) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckFlash({2, 192, 128, 2}, 2, true);
}

TEST(FlashAttentionCuda, MatchesReferenceAtGpt2Heads) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckFlash({2, 256, 768, 12}, 3, false);
}

TEST(FlashAttentionCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const int B = 2, T = 256, C = 256, NH = 4;
  const size_t btc = size_t{B} * T * C;
  DeviceBuffer<bf16> qkv(ToBf16(Uniform(3 * btc, 7))), dout(ToBf16(Uniform(btc, 8)));
  std::vector<std::vector<bf16>> outs, grads;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> out(btc), dqkv(3 * btc);
    DeviceBuffer<float> lse(size_t{B} * NH * T), scratch(FlashAttentionBackwardScratch(B, T, NH));
    ASSERT_TRUE(FlashAttentionForward(out.get(), lse.get(), qkv.get(), B, T, C, NH, nullptr).ok());
    ASSERT_TRUE(FlashAttentionBackward(dqkv.get(), scratch.get(), dout.get(), qkv.get(), out.get(),
                                       lse.get(), B, T, C, NH, nullptr)
                    .ok());
    outs.push_back(out.Download());
    grads.push_back(dqkv.Download());
  }
  EXPECT_TRUE(testing::SameBytes(outs[0].data(), outs[1].data(), btc * sizeof(bf16)));
  EXPECT_TRUE(testing::SameBytes(grads[0].data(), grads[1].data(), 3 * btc * sizeof(bf16)));
}

// Shape checks come before any device work, so these run on any machine.
TEST(FlashAttentionCuda, TakesOnlyHeadSize64AndWholeTiles) {
  EXPECT_TRUE(FlashAttentionSupports(1024, 768, 12));
  EXPECT_FALSE(FlashAttentionSupports(1000, 768, 12));  // T not a multiple of 64
  EXPECT_FALSE(FlashAttentionSupports(1024, 768, 24));  // head size 32
  EXPECT_FALSE(FlashAttentionSupports(1024, 770, 12));
  bf16 dummy[8];
  float f[8];
  EXPECT_EQ(FlashAttentionForward(dummy, f, dummy, 1, 96, 64, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FlashAttentionBackward(dummy, f, dummy, dummy, dummy, f, 1, 64, 128, 4, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// The kernels move 16 bytes at a time; misaligned tensors are refused before any device work.
TEST(FlashAttentionCuda, RefusesMisalignedTensors) {
  alignas(16) bf16 buf[16] = {};
  float f[8] = {};
  EXPECT_EQ(FlashAttentionForward(buf + 1, f, buf, 1, 64, 64, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FlashAttentionBackward(buf, f, buf, buf + 1, buf, f, 1, 64, 64, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace belay::kernels::cuda
