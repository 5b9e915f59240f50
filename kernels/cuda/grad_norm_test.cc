// Global gradient norm and scaling on the GPU against the CPU reference.
#include "kernels/cuda/grad_norm.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/grad_norm.h"

namespace belay::kernels::cuda {
namespace {

using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::Stream;

double GpuSumOfSquares(const std::vector<float>& g) {
  DeviceBuffer<float> d_g(g.empty() ? std::vector<float>(1) : g);
  DeviceBuffer<double> out(1), scratch(SumOfSquaresScratch());
  Stream stream;
  const absl::Status st = SumOfSquares(out.get(), scratch.get(), d_g.get(),
                                       static_cast<int64_t>(g.size()), stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return out.Download()[0];
}

// Squares of floats are exact in double; the sums of n positive doubles in two orders differ
// by at most (n − 1)·2^-53 relative (1.1e-10 for a million terms), typically far less.
constexpr double kSumRtol = 1e-10;

TEST(GradNormCuda, SumOfSquaresMatchesCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  for (int64_t n : {int64_t{5}, int64_t{4096}, int64_t{1'000'003}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const std::vector<float> g = Uniform(static_cast<size_t>(n), 1, -3.0f, 3.0f);
    const double ref = cpu::SumOfSquares(g.data(), n);
    EXPECT_NEAR(GpuSumOfSquares(g), ref, kSumRtol * ref);
  }
}

TEST(GradNormCuda, SumOfSquaresOfNothingIsZero) {
  BELAY_REQUIRE_CUDA_DEVICE();
  EXPECT_EQ(GpuSumOfSquares({}), 0.0);
}

TEST(GradNormCuda, SumOfSquaresIsBitIdenticalAcrossRuns) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const std::vector<float> g = Uniform(3'000'017, 2, -1e-2f, 1e-2f);
  const double a = GpuSumOfSquares(g);
  const double b = GpuSumOfSquares(g);
  EXPECT_EQ(std::memcmp(&a, &b, sizeof(double)), 0) << a << " vs " << b;
}

TEST(GradNormCuda, ScaleMatchesCpuExactly) {
  BELAY_REQUIRE_CUDA_DEVICE();
  std::vector<float> g = Uniform(2'000'003, 3);  // more elements than the grid has threads
  DeviceBuffer<float> d_g(g);
  Stream stream;
  const absl::Status st = Scale(d_g.get(), static_cast<int64_t>(g.size()), 0.37f, stream.get());
  ASSERT_TRUE(st.ok()) << st;
  cpu::Scale(g.data(), static_cast<int64_t>(g.size()), 0.37f);
  // One IEEE multiply per element on both sides.
  EXPECT_TRUE(AllClose(d_g.Download(), ToDouble(g), 0.0, 0.0));
}

TEST(GradNormCuda, AccumulateMatchesAHostLoopExactly) {
  BELAY_REQUIRE_CUDA_DEVICE();
  std::vector<float> dst = Uniform(2'000'003, 5);
  const std::vector<float> src = Uniform(dst.size(), 6);
  DeviceBuffer<float> d_dst(dst);
  const DeviceBuffer<float> d_src(src);
  Stream stream;
  const absl::Status st =
      Accumulate(d_dst.get(), d_src.get(), static_cast<int64_t>(dst.size()), stream.get());
  ASSERT_TRUE(st.ok()) << st;
  for (size_t i = 0; i < dst.size(); ++i) dst[i] += src[i];
  EXPECT_TRUE(AllClose(d_dst.Download(), ToDouble(dst), 0.0, 0.0));
  // In place: doubles every element.
  ASSERT_TRUE(
      Accumulate(d_dst.get(), d_dst.get(), static_cast<int64_t>(dst.size()), stream.get()).ok());
  for (float& x : dst) x += x;
  EXPECT_TRUE(AllClose(d_dst.Download(), ToDouble(dst), 0.0, 0.0));
}

// The launchers check their arguments before touching the device, so this runs anywhere. The
// pointers are never dereferenced.
TEST(GradNormCuda, RejectsBadArguments) {
  float f[8] = {};
  double d[8] = {};
  const absl::Status negative = SumOfSquares(d, d, f, -1, nullptr);
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative.message().find("n must be >= 0"), std::string::npos) << negative;
  const absl::Status no_scratch = SumOfSquares(d, nullptr, f, 8, nullptr);
  EXPECT_NE(no_scratch.message().find("scratch is null"), std::string::npos) << no_scratch;
  const absl::Status scale_negative = Scale(f, -5, 2.0f, nullptr);
  EXPECT_EQ(scale_negative.code(), absl::StatusCode::kInvalidArgument) << scale_negative;
  const absl::Status overlap = Accumulate(f + 1, f, 4, nullptr);
  EXPECT_NE(overlap.message().find("overlap"), std::string::npos) << overlap;
  EXPECT_EQ(Accumulate(nullptr, f, 4, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_GT(SumOfSquaresScratch(), 0u);
}

}  // namespace
}  // namespace belay::kernels::cuda
