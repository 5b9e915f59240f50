// xIELU and its scalar gradients on the GPU against the CPU reference.
#include "kernels/cuda/xielu.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/xielu.h"

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

// bf16 outputs of the same fp32 operations, expm1f/expf against the host's (an ulp or two):
// one bf16 rounding either side at most.
constexpr double kBf16Atol = 1e-6, kBf16Rtol = 2 * kBf16Eps;
// The scalar gradients: the same terms summed in double in another order, then rounded to
// fp32; the terms' expm1f may differ from the host's by an ulp.
constexpr double kScalarAtol = 1e-6, kScalarRtol = 1e-6;

struct Case {
  int64_t n;
  float a_p, a_n;
  std::vector<float> inp, dout, dinp0;

  Case(int64_t count, float ap, float an, uint32_t seed) : n(count), a_p(ap), a_n(an) {
    const auto size = static_cast<size_t>(n);
    inp = RoundedToBf16(Uniform(size, seed, -4.0f, 3.0f));
    // Exact zeros and values at the kink (eps) take the x <= 0 branch's special cases.
    for (size_t i = 0; i < size; i += 17) inp[i] = 0.0f;
    for (size_t i = 5; i < size; i += 23) inp[i] = RoundedToBf16({cpu::kXieluEps})[0];
    dout = RoundedToBf16(Uniform(size, seed + 1));
    dinp0 = RoundedToBf16(Uniform(size, seed + 2));
  }
};

struct GpuResult {
  std::vector<bf16> out, dinp;
  std::vector<float> da;  // da_p, da_n
};

GpuResult RunGpu(const Case& k, float da_p0, float da_n0) {
  DeviceBuffer<bf16> inp(ToBf16(k.inp)), dout(ToBf16(k.dout)), dinp(ToBf16(k.dinp0));
  DeviceBuffer<bf16> out(static_cast<size_t>(k.n));
  DeviceBuffer<float> a(std::vector<float>{k.a_p, k.a_n}), da(std::vector<float>{da_p0, da_n0});
  DeviceBuffer<double> scratch(XieluBackwardScratch(k.n));
  Stream stream;
  absl::Status st = XieluForward(out.get(), inp.get(), k.n, a.get(), a.get() + 1, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  st = XieluBackward(dinp.get(), da.get(), da.get() + 1, scratch.get(), dout.get(), inp.get(), k.n,
                     a.get(), a.get() + 1, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return {out.Download(), dinp.Download(), da.Download()};
}

void Check(int64_t n, float a_p, float a_n, uint32_t seed) {
  SCOPED_TRACE("n=" + std::to_string(n) + " a_p=" + std::to_string(a_p) +
               " a_n=" + std::to_string(a_n));
  const Case k(n, a_p, a_n, seed);
  std::vector<float> out(static_cast<size_t>(n)), dinp = k.dinp0;
  float da_p = 0.25f, da_n = -0.5f;
  cpu::XieluForward(out.data(), k.inp.data(), n, a_p, a_n);
  cpu::XieluBackward(dinp.data(), &da_p, &da_n, k.dout.data(), k.inp.data(), n, a_p, a_n);
  const GpuResult got = RunGpu(k, 0.25f, -0.5f);
  EXPECT_TRUE(AllClose(ToFloat(got.out), ToDouble(out), kBf16Atol, kBf16Rtol)) << "out";
  EXPECT_TRUE(AllClose(ToFloat(got.dinp), ToDouble(dinp), kBf16Atol, kBf16Rtol)) << "dinp";
  EXPECT_TRUE(AllClose(got.da, {da_p, da_n}, kScalarAtol, kScalarRtol)) << "da_p, da_n";
}

TEST(XieluCuda, MatchesCpuWithApertusInitialScalars) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const float a_p = cpu::XieluRawAlphaP(0.8f), a_n = cpu::XieluRawAlphaN(0.8f);
  Check(1, a_p, a_n, 1);
  Check(4096, a_p, a_n, 2);            // exactly one block of the scalar sums
  Check(10000, a_p, a_n, 3);           // the last block partial
  Check((1 << 20) + 77, a_p, a_n, 4);  // more blocks than the summing block's threads
}

TEST(XieluCuda, MatchesCpuWithOtherScalars) {
  BELAY_REQUIRE_CUDA_DEVICE();
  Check(5000, -1.5f, 2.0f, 5);
  Check(5000, 25.0f, -3.0f, 6);  // softplus above its threshold
}

TEST(XieluCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const Case k(3 << 20, 0.3f, -0.2f, 7);
  const GpuResult a = RunGpu(k, 0.0f, 0.0f), b = RunGpu(k, 0.0f, 0.0f);
  EXPECT_TRUE(testing::SameBytes(a.out.data(), b.out.data(), a.out.size() * sizeof(bf16)));
  EXPECT_TRUE(testing::SameBytes(a.dinp.data(), b.dinp.data(), a.dinp.size() * sizeof(bf16)));
  EXPECT_TRUE(cpu::testing::SameBits(a.da, b.da));
}

TEST(XieluCuda, RejectsBadArguments) {
  bf16 h[8] = {};
  float f[2] = {};
  double d[2] = {};
  EXPECT_EQ(XieluForward(h, h, -1, f, f, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(XieluForward(h, h, 0, f, f, nullptr).ok());  // nothing to do
  EXPECT_EQ(XieluForward(h, h, 8, nullptr, f, nullptr).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status no_scratch = XieluBackward(h, f, f + 1, nullptr, h, h, 8, f, f, nullptr);
  EXPECT_NE(no_scratch.message().find("scratch is null"), std::string::npos) << no_scratch;
  EXPECT_EQ(XieluBackward(h, nullptr, f, d, h, h, 8, f, f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(XieluBackwardScratch(0), 0u);
  EXPECT_EQ(XieluBackwardScratch(4097), 4u);
}

}  // namespace
}  // namespace belay::kernels::cuda
