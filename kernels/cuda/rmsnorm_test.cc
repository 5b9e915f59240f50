// RMSNorm (plain and over heads inside packed rows) on the GPU against the CPU reference.
#include "kernels/cuda/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/rmsnorm.h"

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

constexpr float kEps = 1e-5f;
// rstd: fp32 sums of the same bf16 squares in another order, a few ulps relative.
constexpr double kRstdAtol = 1e-6, kRstdRtol = 2e-5;
// bf16 outputs: the final rounding may fall either side of the reference's value (one bf16
// ulp, at most 2 * kBf16Eps relative), plus fp32 differences far below 1e-4.
constexpr double kBf16Atol = 1e-4, kBf16Rtol = 2 * kBf16Eps;

// N tokens of `stride` values; H heads of hs values from `offset` in each are normalised (a
// plain RMSNorm: H = 1, hs = stride, offset 0).
struct Layout {
  int N, H, hs;
  int64_t stride, offset;
  int64_t rows() const { return int64_t{N} * H; }
  size_t size() const { return static_cast<size_t>(N * stride); }
  bool InHead(size_t i) const {
    const int64_t c = static_cast<int64_t>(i) % stride - offset;
    return c >= 0 && c < int64_t{H} * hs;
  }
  std::string Name() const {
    return "N=" + std::to_string(N) + " H=" + std::to_string(H) + " hs=" + std::to_string(hs) +
           " stride=" + std::to_string(stride) + " offset=" + std::to_string(offset);
  }
};

// The normalised values NaN, the others as in `values`: what an output buffer starts as, so
// that a value the kernel fails to write, or writes outside the heads, shows up.
std::vector<float> PoisonHeads(const std::vector<float>& values, const Layout& l) {
  std::vector<float> out = values;
  for (size_t i = 0; i < out.size(); ++i) {
    if (l.InHead(i)) out[i] = std::numeric_limits<float>::quiet_NaN();
  }
  return out;
}

struct Case {
  Layout l;
  std::vector<float> inp, weight, dout, dinp0;

  Case(const Layout& layout, uint32_t seed) : l(layout) {
    inp = RoundedToBf16(Uniform(l.size(), seed, -2.0f, 3.0f));
    weight = RoundedToBf16(Uniform(static_cast<size_t>(l.hs), seed + 1, 0.5f, 1.5f));
    dout = RoundedToBf16(Uniform(l.size(), seed + 2));
    dinp0 = RoundedToBf16(Uniform(l.size(), seed + 3));
  }

  void CpuForward(std::vector<float>& out, std::vector<float>& rstd) const {
    out = PoisonHeads(inp, l);
    rstd.assign(static_cast<size_t>(l.rows()), 0.0f);
    cpu::RmsNormHeadsForward(out.data() + l.offset, rstd.data(), inp.data() + l.offset,
                             weight.data(), l.N, l.H, l.hs, l.stride, kEps);
  }
};

struct GpuForward {
  std::vector<bf16> out;
  std::vector<float> rstd;
};

GpuForward RunForward(const Case& k) {
  DeviceBuffer<bf16> inp(ToBf16(k.inp)), weight(ToBf16(k.weight));
  DeviceBuffer<bf16> out(ToBf16(PoisonHeads(k.inp, k.l)));
  DeviceBuffer<float> rstd(static_cast<size_t>(k.l.rows()));
  Stream stream;
  const absl::Status st =
      k.l.H == 1 && k.l.hs == k.l.stride
          ? RmsNormForward(out.get(), rstd.get(), inp.get(), weight.get(), k.l.N, k.l.hs, kEps,
                           stream.get())
          : RmsNormHeadsForward(out.get() + k.l.offset, rstd.get(), inp.get() + k.l.offset,
                                weight.get(), k.l.N, k.l.H, k.l.hs, k.l.stride, kEps, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return {out.Download(), rstd.Download()};
}

struct GpuBackward {
  std::vector<bf16> dinp;
  std::vector<float> dweight;
};

GpuBackward RunBackward(const Case& k, const std::vector<float>& rstd, float dweight0) {
  DeviceBuffer<bf16> inp(ToBf16(k.inp)), weight(ToBf16(k.weight)), dout(ToBf16(k.dout));
  DeviceBuffer<bf16> dinp(ToBf16(k.dinp0));
  DeviceBuffer<float> d_rstd(rstd),
      dweight(std::vector<float>(static_cast<size_t>(k.l.hs), dweight0));
  DeviceBuffer<float> scratch(RmsNormBackwardScratch(k.l.rows(), k.l.hs));
  Stream stream;
  const absl::Status st =
      k.l.H == 1 && k.l.hs == k.l.stride
          ? RmsNormBackward(dinp.get(), dweight.get(), scratch.get(), dout.get(), inp.get(),
                            weight.get(), d_rstd.get(), k.l.N, k.l.hs, stream.get())
          : RmsNormHeadsBackward(dinp.get() + k.l.offset, dweight.get(), scratch.get(),
                                 dout.get() + k.l.offset, inp.get() + k.l.offset, weight.get(),
                                 d_rstd.get(), k.l.N, k.l.H, k.l.hs, k.l.stride, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return {dinp.Download(), dweight.Download()};
}

void CheckForwardAndBackward(const Layout& l, uint32_t seed) {
  SCOPED_TRACE(l.Name());
  const Case k(l, seed);
  std::vector<float> out, rstd;
  k.CpuForward(out, rstd);
  const GpuForward got = RunForward(k);
  // Values outside the heads are copied from the input and must come back untouched.
  EXPECT_TRUE(AllClose(ToFloat(got.out), ToDouble(out), kBf16Atol, kBf16Rtol)) << "out";
  EXPECT_TRUE(AllClose(got.rstd, ToDouble(rstd), kRstdAtol, kRstdRtol)) << "rstd";

  std::vector<float> dinp = k.dinp0, dweight(static_cast<size_t>(l.hs), 0.5f);
  cpu::RmsNormHeadsBackward(dinp.data() + l.offset, dweight.data(), k.dout.data() + l.offset,
                            k.inp.data() + l.offset, k.weight.data(), rstd.data(), l.N, l.H, l.hs,
                            l.stride);
  const GpuBackward grad = RunBackward(k, rstd, 0.5f);
  EXPECT_TRUE(AllClose(ToFloat(grad.dinp), ToDouble(dinp), kBf16Atol, kBf16Rtol)) << "dinp";
  // fp32 sums over the rows of O(1) terms of random sign, in chunks instead of one run: each of
  // the rows' additions errs by 2^-24 of a partial sum ~sqrt(rows).
  const double atol = 2e-5 * std::sqrt(static_cast<double>(l.rows()));
  EXPECT_TRUE(AllClose(grad.dweight, ToDouble(dweight), atol, 1e-5)) << "dweight";
}

TEST(RmsNormCuda, MatchesCpuOnWholeRows) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForwardAndBackward({256, 1, 768, 768, 0}, 1);
  CheckForwardAndBackward({300, 1, 64, 64, 0}, 2);  // rows span three dweight chunks
  CheckForwardAndBackward({7, 1, 37, 37, 0}, 3);    // C odd and under a warp's width
}

TEST(RmsNormCuda, HeadsNormaliseOnlyTheirPartOfPackedRows) {
  BELAY_REQUIRE_CUDA_DEVICE();
  // QK-norm inside qkv rows of NH = 4 query heads and NKV = 2 key/value heads of 64: the
  // query heads, then the key heads (the values and the other part untouched).
  const int hs = 64;
  const int64_t width = int64_t{4 + 2 * 2} * hs;
  CheckForwardAndBackward({33, 4, hs, width, 0}, 10);
  CheckForwardAndBackward({33, 2, hs, width, 4 * hs}, 11);
  CheckForwardAndBackward({150, 3, 24, 3 * 24 + 5, 2}, 12);  // odd stride and offset
}

TEST(RmsNormCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const Case k({1000, 2, 128, 512, 128}, 20);
  const GpuForward a = RunForward(k), b = RunForward(k);
  EXPECT_TRUE(testing::SameBytes(a.out.data(), b.out.data(), a.out.size() * sizeof(bf16)));
  EXPECT_TRUE(cpu::testing::SameBits(a.rstd, b.rstd));
  const GpuBackward ga = RunBackward(k, a.rstd, 0.0f), gb = RunBackward(k, a.rstd, 0.0f);
  EXPECT_TRUE(testing::SameBytes(ga.dinp.data(), gb.dinp.data(), ga.dinp.size() * sizeof(bf16)));
  EXPECT_TRUE(cpu::testing::SameBits(ga.dweight, gb.dweight));
}

// Argument checks come before any device work, so this runs anywhere; the pointers are never
// dereferenced.
TEST(RmsNormCuda, RejectsBadShapes) {
  bf16 h[8] = {};
  float f[8] = {};
  const absl::Status c0 = RmsNormForward(h, f, h, h, 4, 0, kEps, nullptr);
  EXPECT_EQ(c0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c0.message().find("must be > 0"), std::string::npos) << c0;
  const absl::Status narrow = RmsNormHeadsForward(h, f, h, h, 2, 2, 4, 7, kEps, nullptr);
  EXPECT_NE(narrow.message().find("stride"), std::string::npos) << narrow;
  EXPECT_EQ(RmsNormForward(h, f, h, h, 1, 8, 0.0f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status no_scratch = RmsNormBackward(h, f, nullptr, h, h, h, f, 1, 8, nullptr);
  EXPECT_NE(no_scratch.message().find("scratch is null"), std::string::npos) << no_scratch;
  EXPECT_EQ(RmsNormBackwardScratch(0, 8), 0u);
  EXPECT_GE(RmsNormBackwardScratch(1, 8), 8u);
}

}  // namespace
}  // namespace belay::kernels::cuda
