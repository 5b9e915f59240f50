// Fused residual + LayerNorm on the GPU against the CPU references.
#include "kernels/cuda/layernorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/layernorm.h"

namespace belay::kernels::cuda {
namespace {

using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::kBf16Eps;
using testing::RoundedToBf16;
using testing::Stream;
using testing::ToBf16;
using testing::ToFloat;

// Row statistics in fp32 from the same bf16 inputs, summed in another order: the mean's error
// is a few ulps of mean(|x|) ~ 1.5 and rstd's a few ulps relative (C·2^-24 = 4.6e-5 is the
// worst case for C = 768; random rounding gives ~sqrt(C)·2^-24 ~ 2e-6).
constexpr double kMeanAtol = 1e-5, kMeanRtol = 1e-5;
constexpr double kRstdAtol = 1e-6, kRstdRtol = 2e-5;
// bf16 outputs: the final rounding may fall either side of the reference (2 × kBf16Eps), plus
// the fp32 differences above times values of order 5 (well under 1e-4).
constexpr double kBf16Atol = 1e-4, kBf16Rtol = 2 * kBf16Eps;

struct Inputs {
  int N, C;
  std::vector<float> a, b, weight, bias;  // all rounded to bf16

  Inputs(int n, int c, uint32_t seed) : N(n), C(c) {
    const size_t size = static_cast<size_t>(N) * C;
    a = RoundedToBf16(Uniform(size, seed, -2.0f, 3.0f));  // mean != 0
    b = RoundedToBf16(Uniform(size, seed + 1));
    weight = RoundedToBf16(Uniform(static_cast<size_t>(C), seed + 2, 0.5f, 1.5f));
    bias = RoundedToBf16(Uniform(static_cast<size_t>(C), seed + 3));
  }
};

void CheckForward(int N, int C, bool with_residual, uint32_t seed) {
  SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C) +
               (with_residual ? " with residual" : " without residual"));
  const Inputs in(N, C, seed);
  const size_t size = in.a.size();
  // Reference: the residual rounded to bf16 first, then LayerNorm of the rounded values.
  std::vector<float> residual = in.a;
  if (with_residual) {
    for (size_t i = 0; i < size; ++i) residual[i] = in.a[i] + in.b[i];
    residual = RoundedToBf16(residual);
  }
  std::vector<float> out(size), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N));
  cpu::LayerNormForward(out.data(), mean.data(), rstd.data(), residual.data(), in.weight.data(),
                        in.bias.data(), N, C);

  DeviceBuffer<bf16> d_a(ToBf16(in.a)), d_b(ToBf16(in.b)), d_w(ToBf16(in.weight)),
      d_bias(ToBf16(in.bias)), d_residual(size), d_out(size);
  DeviceBuffer<float> d_mean(static_cast<size_t>(N)), d_rstd(static_cast<size_t>(N));
  Stream stream;
  const absl::Status st = ResidualLayerNormForward(
      with_residual ? d_residual.get() : nullptr, d_out.get(), d_mean.get(), d_rstd.get(),
      d_a.get(), with_residual ? d_b.get() : nullptr, d_w.get(), d_bias.get(), N, C, stream.get());
  ASSERT_TRUE(st.ok()) << st;
  if (with_residual) {
    // One fp32 add of two bf16 values, rounded once: exactly the reference's rounding.
    EXPECT_TRUE(AllClose(ToFloat(d_residual.Download()), ToDouble(residual), 0.0, 0.0));
  }
  EXPECT_TRUE(AllClose(ToFloat(d_out.Download()), ToDouble(out), kBf16Atol, kBf16Rtol));
  EXPECT_TRUE(AllClose(d_mean.Download(), ToDouble(mean), kMeanAtol, kMeanRtol));
  EXPECT_TRUE(AllClose(d_rstd.Download(), ToDouble(rstd), kRstdAtol, kRstdRtol));
}

TEST(LayerNormCuda, FusedResidualForwardMatchesCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForward(256, 768, true, 1);
  CheckForward(10, 72, true, 2);  // C a multiple of 8 but not of 32
  CheckForward(7, 38, true, 3);   // C not a multiple of 8: the scalar path
}

TEST(LayerNormCuda, ForwardWithoutResidualNormalisesA) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForward(64, 768, false, 4);
  CheckForward(9, 38, false, 5);
}

struct BackwardResult {
  std::vector<bf16> dinp;
  std::vector<float> dweight, dbias;
};

struct BackwardCase {
  int N, C;
  std::vector<float> inp, weight, dout, mean, rstd, dinp0;

  BackwardCase(int n, int c, uint32_t seed) : N(n), C(c) {
    const size_t size = static_cast<size_t>(N) * C;
    inp = RoundedToBf16(Uniform(size, seed, -2.0f, 3.0f));
    weight = RoundedToBf16(Uniform(static_cast<size_t>(C), seed + 1, 0.5f, 1.5f));
    dout = RoundedToBf16(Uniform(size, seed + 2));
    dinp0 = RoundedToBf16(Uniform(size, seed + 3));  // an existing residual-stream gradient
    // The saved statistics, as the forward pass would have left them (same ones fed to both).
    std::vector<float> out(size), bias(static_cast<size_t>(C), 0.0f);
    mean.resize(static_cast<size_t>(N));
    rstd.resize(static_cast<size_t>(N));
    cpu::LayerNormForward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                          bias.data(), N, C);
  }

  BackwardResult RunGpu(float dweight0, float dbias0) const {
    const size_t scratch = LayerNormBackwardScratch(N, C);
    constexpr size_t kGuard = 256;  // past the scratch LayerNormBackward asked for
    DeviceBuffer<bf16> d_dinp(ToBf16(dinp0)), d_dout(ToBf16(dout)), d_inp(ToBf16(inp)),
        d_w(ToBf16(weight));
    DeviceBuffer<float> d_mean(mean), d_rstd(rstd), d_scratch(scratch + kGuard);
    DeviceBuffer<float> d_dweight(std::vector<float>(static_cast<size_t>(C), dweight0));
    DeviceBuffer<float> d_dbias(std::vector<float>(static_cast<size_t>(C), dbias0));
    Stream stream;
    const absl::Status st = LayerNormBackward(d_dinp.get(), d_dweight.get(), d_dbias.get(),
                                              d_scratch.get(), d_dout.get(), d_inp.get(), d_w.get(),
                                              d_mean.get(), d_rstd.get(), N, C, stream.get());
    EXPECT_TRUE(st.ok()) << st;
    const std::vector<float> s = d_scratch.Download();
    for (size_t i = scratch; i < s.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &s[i], sizeof(bits));
      EXPECT_EQ(bits, 0xffffffffu) << "scratch written past its size at " << i;
    }
    return {d_dinp.Download(), d_dweight.Download(), d_dbias.Download()};
  }
};

void CheckBackward(int N, int C, uint32_t seed) {
  SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
  const BackwardCase k(N, C, seed);
  const BackwardResult got = k.RunGpu(0.5f, -0.25f);
  std::vector<float> dinp = k.dinp0;
  std::vector<float> dweight(static_cast<size_t>(C), 0.5f), dbias(static_cast<size_t>(C), -0.25f);
  cpu::LayerNormBackward(dinp.data(), dweight.data(), dbias.data(), k.dout.data(), k.inp.data(),
                         k.weight.data(), k.mean.data(), k.rstd.data(), N, C);
  EXPECT_TRUE(AllClose(ToFloat(got.dinp), ToDouble(dinp), kBf16Atol, kBf16Rtol)) << "dinp";
  // fp32 sums over N rows of O(1) terms of random sign, in another order than the reference's:
  // the partial sums stay ~sqrt(N) in magnitude and each of the N additions errs by at most
  // 2^-24 of that, so N·sqrt(N)·2^-24 (2.4e-4 for N = 256) bounds the difference.
  const double atol = 2e-5 * std::sqrt(static_cast<double>(N));
  EXPECT_TRUE(AllClose(got.dweight, ToDouble(dweight), atol, 1e-5)) << "dweight";
  EXPECT_TRUE(AllClose(got.dbias, ToDouble(dbias), atol, 1e-5)) << "dbias";
}

TEST(LayerNormCuda, BackwardAccumulatesIntoExistingGradients) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckBackward(256, 768, 10);
  CheckBackward(300, 72, 11);  // N spans several row chunks, the last one partial
  CheckBackward(5, 38, 12);
}

TEST(LayerNormCuda, BackwardIsBitIdenticalAcrossRuns) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const BackwardCase k(1000, 768, 20);
  const BackwardResult a = k.RunGpu(0.0f, 0.0f);
  const BackwardResult b = k.RunGpu(0.0f, 0.0f);
  EXPECT_TRUE(testing::SameBytes(a.dinp.data(), b.dinp.data(), a.dinp.size() * sizeof(bf16)));
  EXPECT_TRUE(cpu::testing::SameBits(a.dweight, b.dweight));
  EXPECT_TRUE(cpu::testing::SameBits(a.dbias, b.dbias));
}

TEST(LayerNormCuda, ScratchGrowsWithRowsNotWithDevice) {
  EXPECT_EQ(LayerNormBackwardScratch(0, 768), 0u);
  EXPECT_GE(LayerNormBackwardScratch(1, 768), 2u * 768);
  EXPECT_LE(LayerNormBackwardScratch(256, 768), LayerNormBackwardScratch(65536, 768));
}

// The launchers check their arguments before touching the device, so these run anywhere. The
// pointers are never dereferenced.
TEST(LayerNormCuda, RejectsBadShapes) {
  bf16 h[8] = {};
  float f[8] = {};
  const absl::Status c0 = ResidualLayerNormForward(h, h, f, f, h, h, h, h, 4, 0, nullptr);
  EXPECT_EQ(c0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c0.message().find("C must be > 0"), std::string::npos) << c0;
  const absl::Status n0 = ResidualLayerNormForward(h, h, f, f, h, h, h, h, -1, 8, nullptr);
  EXPECT_NE(n0.message().find("N must be > 0"), std::string::npos) << n0;
  const absl::Status no_residual =
      ResidualLayerNormForward(nullptr, h, f, f, h, h, h, h, 1, 8, nullptr);
  EXPECT_EQ(no_residual.code(), absl::StatusCode::kInvalidArgument) << no_residual;

  const absl::Status bn0 = LayerNormBackward(h, f, f, f, h, h, h, f, f, 0, 8, nullptr);
  EXPECT_EQ(bn0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bn0.message().find("N must be > 0"), std::string::npos) << bn0;
  const absl::Status no_scratch = LayerNormBackward(h, f, f, nullptr, h, h, h, f, f, 1, 8, nullptr);
  EXPECT_NE(no_scratch.message().find("scratch is null"), std::string::npos) << no_scratch;
}

}  // namespace
}  // namespace belay::kernels::cuda
