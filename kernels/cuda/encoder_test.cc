// Token + position embedding on the GPU against the CPU reference.
#include "kernels/cuda/encoder.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/encoder.h"

namespace belay::kernels::cuda {
namespace {

using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Tokens;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::kBf16Eps;
using testing::RoundedToBf16;
using testing::Stream;
using testing::ToBf16;
using testing::ToFloat;

struct Shape {
  int B, T, C, Vp;
};

// The forward pass is one fp32 add of two bf16 values, rounded once: at most half a bf16 ulp
// from the fp32 reference, i.e. within kBf16Eps relative.
void CheckForward(Shape s, uint32_t seed) {
  const int64_t BT = int64_t{s.B} * s.T;
  const std::vector<int32_t> tokens = Tokens(static_cast<size_t>(BT), s.Vp, seed);
  const std::vector<float> wte = RoundedToBf16(Uniform(static_cast<size_t>(s.Vp) * s.C, seed + 1));
  const std::vector<float> wpe = RoundedToBf16(Uniform(static_cast<size_t>(s.T) * s.C, seed + 2));
  std::vector<float> ref(static_cast<size_t>(BT) * s.C);
  cpu::EncoderForward(ref.data(), tokens.data(), wte.data(), wpe.data(), s.B, s.T, s.C);

  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<bf16> d_wte(ToBf16(wte)), d_wpe(ToBf16(wpe)), d_out(ref.size());
  Stream stream;
  ASSERT_TRUE(EncoderForward(d_out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), s.B, s.T, s.C,
                             stream.get())
                  .ok());
  EXPECT_TRUE(AllClose(ToFloat(d_out.Download()), ToDouble(ref), 0.0, kBf16Eps));
}

TEST(EncoderCuda, ForwardMatchesCpuAtGpt2Width) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForward({4, 64, 768, 1024}, 1);
}

TEST(EncoderCuda, ForwardMatchesCpuAtOddWidths) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForward({3, 17, 72, 1000}, 2);  // C a multiple of 8 but not of 32
  CheckForward({2, 5, 38, 300}, 3);    // C not a multiple of 8: the scalar path
}

TEST(EncoderCuda, BucketTokensGroupsPositionsByTokenInOrder) {
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 1, 3};
  const EncoderBuckets b = BucketTokens(tokens.data(), static_cast<int>(tokens.size()));
  EXPECT_EQ(b.ids, (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(b.starts, (std::vector<int32_t>{0, 1, 3, 6}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{3, 1, 4, 0, 2, 5}));
}

struct BackwardResult {
  std::vector<float> dwte, dwpe;
};

// Runs EncoderBackward on grads that start at `dwte0`, `dwpe0`; dwpe has wpe_rows >= T rows.
BackwardResult RunBackward(const std::vector<bf16>& dout, const std::vector<int32_t>& tokens,
                           const std::vector<float>& dwte0, const std::vector<float>& dwpe0,
                           Shape s) {
  const EncoderBuckets buckets = BucketTokens(tokens.data(), static_cast<int>(tokens.size()));
  DeviceBuffer<int32_t> ids(buckets.ids), starts(buckets.starts), positions(buckets.positions);
  DeviceBuffer<bf16> d_dout(dout);
  DeviceBuffer<float> dwte(dwte0), dwpe(dwpe0);
  const EncoderBucketsView view{ids.get(), starts.get(), positions.get(),
                                static_cast<int>(buckets.ids.size())};
  Stream stream;
  const absl::Status st =
      EncoderBackward(dwte.get(), dwpe.get(), d_dout.get(), view, s.B, s.T, s.C, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return {dwte.Download(), dwpe.Download()};
}

// fp32 gradients summed from bf16 values (exact in fp32) in the reference's own order, starting
// from the existing value: the sums are expected to be bit-identical; the tolerance only allows
// for a compiler reassociating the CPU loop.
constexpr double kGradAtol = 1e-6;
constexpr double kGradRtol = 1e-6;

void CheckBackward(Shape s, int distinct_tokens, int wpe_rows, uint32_t seed) {
  const int64_t BT = int64_t{s.B} * s.T;
  const std::vector<int32_t> tokens = Tokens(static_cast<size_t>(BT), distinct_tokens, seed);
  const std::vector<float> dout = RoundedToBf16(Uniform(static_cast<size_t>(BT) * s.C, seed + 1));
  // Non-zero starting values: the op accumulates, and untouched rows must keep theirs.
  std::vector<float> dwte(static_cast<size_t>(s.Vp) * s.C, 0.5f);
  std::vector<float> dwpe(static_cast<size_t>(wpe_rows) * s.C, -0.25f);
  const BackwardResult got = RunBackward(ToBf16(dout), tokens, dwte, dwpe, s);
  cpu::EncoderBackward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), s.B, s.T, s.C);
  EXPECT_TRUE(AllClose(got.dwte, ToDouble(dwte), kGradAtol, kGradRtol)) << "dwte";
  EXPECT_TRUE(AllClose(got.dwpe, ToDouble(dwpe), kGradAtol, kGradRtol)) << "dwpe";
}

TEST(EncoderCuda, BackwardAccumulatesIntoExistingGradients) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckBackward({4, 64, 768, 1024}, 1024, 64, 10);
  CheckBackward({3, 17, 72, 1000}, 50, 40, 11);  // dwpe has rows past T: left alone
  CheckBackward({2, 5, 38, 300}, 300, 5, 12);
}

TEST(EncoderCuda, BackwardIsBitIdenticalAcrossRunsWithRepeatedTokens) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const Shape s{8, 256, 768, 64};
  const int64_t BT = int64_t{s.B} * s.T;
  // 2048 positions over 5 distinct tokens: hundreds of additions per dwte element.
  const std::vector<int32_t> tokens = Tokens(static_cast<size_t>(BT), 5, 20);
  const std::vector<bf16> dout = ToBf16(Uniform(static_cast<size_t>(BT) * s.C, 21));
  const std::vector<float> dwte(static_cast<size_t>(s.Vp) * s.C, 0.125f);
  const std::vector<float> dwpe(static_cast<size_t>(s.T) * s.C, 0.0f);
  const BackwardResult a = RunBackward(dout, tokens, dwte, dwpe, s);
  const BackwardResult b = RunBackward(dout, tokens, dwte, dwpe, s);
  EXPECT_TRUE(cpu::testing::SameBits(a.dwte, b.dwte));
  EXPECT_TRUE(cpu::testing::SameBits(a.dwpe, b.dwpe));
}

// The launchers check their arguments before touching the device, so these run anywhere. The
// pointers are never dereferenced.
TEST(EncoderCuda, RejectsBadShapes) {
  bf16 dummy_bf16[8] = {};
  int32_t dummy_int[8] = {};
  float dummy_float[8] = {};
  const absl::Status c0 =
      EncoderForward(dummy_bf16, dummy_int, dummy_bf16, dummy_bf16, 1, 1, 0, nullptr);
  EXPECT_EQ(c0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c0.message().find("C must be > 0"), std::string::npos) << c0;
  const absl::Status b0 =
      EncoderForward(dummy_bf16, dummy_int, dummy_bf16, dummy_bf16, 0, 1, 8, nullptr);
  EXPECT_NE(b0.message().find("B must be > 0"), std::string::npos) << b0;
  const absl::Status null_wte =
      EncoderForward(dummy_bf16, dummy_int, nullptr, dummy_bf16, 1, 1, 8, nullptr);
  EXPECT_NE(null_wte.message().find("wte is null"), std::string::npos) << null_wte;

  const EncoderBucketsView view{dummy_int, dummy_int, dummy_int, 1};
  const absl::Status t0 =
      EncoderBackward(dummy_float, dummy_float, dummy_bf16, view, 1, -3, 8, nullptr);
  EXPECT_EQ(t0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t0.message().find("T must be > 0"), std::string::npos) << t0;
  const EncoderBucketsView no_arrays{nullptr, nullptr, nullptr, 2};
  const absl::Status nb =
      EncoderBackward(dummy_float, dummy_float, dummy_bf16, no_arrays, 1, 1, 8, nullptr);
  EXPECT_EQ(nb.code(), absl::StatusCode::kInvalidArgument) << nb;
}

}  // namespace
}  // namespace belay::kernels::cuda
