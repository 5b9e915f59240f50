// SwiGLU on the GPU against the CPU reference.
#include "kernels/cuda/swiglu.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/swiglu.h"

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

// fp32 arithmetic on both sides (expf within two ulps of the host's exp, products possibly
// contracted into FMAs), rounded once to bf16: one bf16 rounding either side at most.
constexpr double kAtol = 1e-5, kRtol = 2 * kBf16Eps;

struct Case {
  int N, F;
  std::vector<float> inp, dout, dinp0;
  Case(int n, int f, uint32_t seed) : N(n), F(f) {
    const size_t nf = static_cast<size_t>(N) * F;
    inp = RoundedToBf16(Uniform(2 * nf, seed, -6.0f, 6.0f));
    dout = RoundedToBf16(Uniform(nf, seed + 1));
    dinp0 = RoundedToBf16(Uniform(2 * nf, seed + 2));
  }
};

struct GpuResult {
  std::vector<bf16> out, dinp;
};

GpuResult RunGpu(const Case& k) {
  DeviceBuffer<bf16> inp(ToBf16(k.inp)), dout(ToBf16(k.dout)), dinp(ToBf16(k.dinp0));
  DeviceBuffer<bf16> out(k.dout.size());
  Stream stream;
  absl::Status st = SwigluForward(out.get(), inp.get(), k.N, k.F, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  st = SwigluBackward(dinp.get(), dout.get(), inp.get(), k.N, k.F, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return {out.Download(), dinp.Download()};
}

void Check(int N, int F, uint32_t seed) {
  SCOPED_TRACE("N=" + std::to_string(N) + " F=" + std::to_string(F));
  const Case k(N, F, seed);
  std::vector<float> out(k.dout.size()), dinp = k.dinp0;
  cpu::SwigluForward(out.data(), k.inp.data(), N, F);
  cpu::SwigluBackward(dinp.data(), k.dout.data(), k.inp.data(), N, F);
  const GpuResult got = RunGpu(k);
  EXPECT_TRUE(AllClose(ToFloat(got.out), ToDouble(out), kAtol, kRtol)) << "out";
  EXPECT_TRUE(AllClose(ToFloat(got.dinp), ToDouble(dinp), kAtol, kRtol)) << "dinp";
}

TEST(SwigluCuda, MatchesCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  Check(64, 512, 1);
  Check(33, 100, 2);
  Check(3, 1, 3);
  Check(4096, 1100, 4);  // more elements than the grid's threads: grid-stride
}

TEST(SwigluCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const Case k(257, 300, 5);
  const GpuResult a = RunGpu(k), b = RunGpu(k);
  EXPECT_TRUE(testing::SameBytes(a.out.data(), b.out.data(), a.out.size() * sizeof(bf16)));
  EXPECT_TRUE(testing::SameBytes(a.dinp.data(), b.dinp.data(), a.dinp.size() * sizeof(bf16)));
}

TEST(SwigluCuda, RejectsBadShapes) {
  bf16 h[8] = {};
  const absl::Status f0 = SwigluForward(h, h, 2, 0, nullptr);
  EXPECT_EQ(f0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f0.message().find("F must be > 0"), std::string::npos) << f0;
  EXPECT_EQ(SwigluBackward(h, h, h, 0, 4, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SwigluBackward(h, nullptr, h, 1, 4, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace belay::kernels::cuda
