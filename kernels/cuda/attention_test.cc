// Causal attention on the GPU against the CPU reference.
#include "kernels/cuda/attention.h"

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
using testing::ToBf16;
using testing::ToFloat;

struct Shape {
  int B, T, C, NH;
};

void CheckAttention(Shape s, uint32_t seed) {
  const size_t B = s.B, T = s.T, C = s.C, NH = s.NH;
  const size_t btc = B * T * C, bhtt = B * NH * T * T;
  std::vector<float> qkv = RoundedToBf16(Uniform(3 * btc, seed, -2.0f, 2.0f));
  std::vector<float> dout = RoundedToBf16(Uniform(btc, seed + 1));
  std::vector<float> out(btc), att(bhtt), dqkv(3 * btc, 0.0f), scratch(bhtt);
  cpu::AttentionForward(out.data(), att.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  cpu::AttentionBackward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                         s.C, s.NH);

  auto blas = Blas::Create();
  ASSERT_TRUE(blas.ok()) << blas.status();
  DeviceBuffer<bf16> d_qkv(ToBf16(qkv)), d_dout(ToBf16(dout));
  DeviceBuffer<bf16> d_out(btc), d_att(bhtt), d_dqkv(3 * btc);
  DeviceBuffer<bf16> fwd_scratch(AttentionForwardScratch(s.B, s.T, s.C, s.NH));
  DeviceBuffer<bf16> bwd_scratch(AttentionBackwardScratch(s.B, s.T, s.C, s.NH));
  absl::Status st = AttentionForward(**blas, d_out.get(), d_att.get(), fwd_scratch.get(),
                                     d_qkv.get(), s.B, s.T, s.C, s.NH, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  st = AttentionBackward(**blas, d_dqkv.get(), bwd_scratch.get(), d_dout.get(), d_qkv.get(),
                         d_att.get(), s.B, s.T, s.C, s.NH, nullptr);
  ASSERT_TRUE(st.ok()) << st;

  // att in [0, 1], rounded once to bf16 (2^-9 relative); exactly 0 above the diagonal.
  const std::vector<float> got_att = ToFloat(d_att.Download());
  EXPECT_TRUE(AllClose(got_att, ToDouble(att), 1e-3, 2 * kBf16Eps));
  for (size_t bh = 0; bh < B * NH; ++bh) {
    for (size_t i = 0; i < T; ++i) {
      for (size_t j = i + 1; j < T; ++j) {
        ASSERT_EQ(got_att[(bh * T + i) * T + j], 0.0f) << bh << " " << i << " " << j;
      }
    }
  }
  // out: convex combinations of v in [-2, 2] with bf16 weights (each off by 2^-9 at most),
  // then rounded to bf16.
  const std::vector<float> got_out = ToFloat(d_out.Download());
  EXPECT_TRUE(AllClose(got_out, ToDouble(out), 2e-2, 2 * kBf16Eps));
  EXPECT_LT(RelativeError(got_out, out), 4e-3);
  // dqkv goes through bf16 att, dy and dpre: elementwise loose, as a whole within 1%.
  const std::vector<float> got_dqkv = ToFloat(d_dqkv.Download());
  EXPECT_TRUE(AllClose(got_dqkv, ToDouble(dqkv), 5e-2, 5e-2));
  EXPECT_LT(RelativeError(got_dqkv, dqkv), 1e-2);
}

TEST(AttentionCuda, SmallHeadsMatchReference) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckAttention({2, 64, 64, 4}, 1);
  CheckAttention({3, 40, 96, 2}, 2);
}

TEST(AttentionCuda, Gpt2HeadsMatchReference) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckAttention({1, 256, 768, 12}, 3);
}

TEST(AttentionCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const int B = 2, T = 128, C = 128, NH = 4;
  const size_t btc = size_t{B} * T * C, bhtt = size_t{B} * NH * T * T;
  DeviceBuffer<bf16> qkv(ToBf16(Uniform(3 * btc, 7))), dout(ToBf16(Uniform(btc, 8)));
  auto blas = Blas::Create();
  ASSERT_TRUE(blas.ok()) << blas.status();
  std::vector<std::vector<bf16>> outs, grads;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> out(btc), att(bhtt), dqkv(3 * btc);
    DeviceBuffer<bf16> fs(AttentionForwardScratch(B, T, C, NH));
    DeviceBuffer<bf16> bs(AttentionBackwardScratch(B, T, C, NH));
    ASSERT_TRUE(
        AttentionForward(**blas, out.get(), att.get(), fs.get(), qkv.get(), B, T, C, NH, nullptr)
            .ok());
    ASSERT_TRUE(AttentionBackward(**blas, dqkv.get(), bs.get(), dout.get(), qkv.get(), att.get(), B,
                                  T, C, NH, nullptr)
                    .ok());
    outs.push_back(out.Download());
    grads.push_back(dqkv.Download());
  }
  EXPECT_TRUE(testing::SameBytes(outs[0].data(), outs[1].data(), btc * sizeof(bf16)));
  EXPECT_TRUE(testing::SameBytes(grads[0].data(), grads[1].data(), 3 * btc * sizeof(bf16)));
}

TEST(AttentionCuda, RejectsHeadSizesItCannotTile) {
  BELAY_REQUIRE_CUDA_DEVICE();
  auto blas = Blas::Create();
  ASSERT_TRUE(blas.ok()) << blas.status();
  DeviceBuffer<bf16> x(4096);
  EXPECT_EQ(
      AttentionForward(**blas, x.get(), x.get(), x.get(), x.get(), 1, 8, 12, 4, nullptr).code(),
      absl::StatusCode::kInvalidArgument);  // head size 3
  EXPECT_EQ(
      AttentionForward(**blas, x.get(), x.get(), x.get(), x.get(), 1, 8, 30, 4, nullptr).code(),
      absl::StatusCode::kInvalidArgument);  // C not a multiple of NH
}

}  // namespace
}  // namespace belay::kernels::cuda
