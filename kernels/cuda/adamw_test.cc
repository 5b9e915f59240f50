// AdamW on the GPU against the CPU reference.
#include "kernels/cuda/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"

namespace belay::kernels::cuda {
namespace {

using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::Stream;

// fp32 in, fp32 out, the same IEEE operations in the same order with the same host-computed
// bias corrections: bit-identical in practice. The tolerance (a few fp32 ulps) only allows for
// a CPU build that contracts a multiply-add into an FMA.
constexpr double kAtol = 1e-9, kRtol = 1e-6;

struct State {
  std::vector<float> master, grads, m, v;

  State(int64_t n, uint32_t seed) {
    const auto size = static_cast<size_t>(n);
    master = Uniform(size, seed);
    grads = Uniform(size, seed + 1, -0.1f, 0.1f);
    m = Uniform(size, seed + 2, -0.01f, 0.01f);
    v = Uniform(size, seed + 3, 0.0f, 1e-3f);
  }
};

void CheckUpdate(int64_t n, const cpu::AdamWParams& p, bool with_params, uint32_t seed) {
  SCOPED_TRACE("n=" + std::to_string(n) + " step=" + std::to_string(p.step));
  State s(n, seed);
  DeviceBuffer<float> master(s.master), grads(s.grads), m(s.m), v(s.v);
  DeviceBuffer<bf16> params(static_cast<size_t>(n));
  Stream stream;
  const absl::Status st = AdamWUpdate(master.get(), with_params ? params.get() : nullptr,
                                      grads.get(), m.get(), v.get(), n, p, stream.get());
  ASSERT_TRUE(st.ok()) << st;
  cpu::AdamWUpdate(s.master.data(), s.grads.data(), s.m.data(), s.v.data(), n, p);
  EXPECT_TRUE(AllClose(master.Download(), ToDouble(s.master), kAtol, kRtol)) << "master";
  EXPECT_TRUE(AllClose(m.Download(), ToDouble(s.m), kAtol, kRtol)) << "m";
  EXPECT_TRUE(AllClose(v.Download(), ToDouble(s.v), kAtol, kRtol)) << "v";
  testing::ExpectWorkingCopy(params.Download(), s.master, with_params);
}

TEST(AdamWCuda, UpdateMatchesCpuWithWeightDecay) {
  BELAY_REQUIRE_CUDA_DEVICE();
  cpu::AdamWParams p;
  p.lr = 6e-4f;
  p.weight_decay = 0.1f;
  p.step = 7;
  CheckUpdate(100003, p, true, 1);
}

TEST(AdamWCuda, FirstStepWithoutDecayMatchesCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  cpu::AdamWParams p;
  p.lr = 1e-3f;
  p.step = 1;  // bias corrections 1 − β: the largest
  CheckUpdate(1000, p, true, 2);
}

TEST(AdamWCuda, CoversAllElementsBeyondOneGridAndSkipsNullParams) {
  BELAY_REQUIRE_CUDA_DEVICE();
  cpu::AdamWParams p;
  p.lr = 3e-4f;
  p.weight_decay = 0.1f;
  p.step = 1000;
  CheckUpdate(3'000'017, p, false, 3);  // more elements than the grid has threads
}

// The launcher checks its arguments before touching the device, so this runs anywhere. The
// pointers are never dereferenced.
TEST(AdamWCuda, RejectsBadArguments) {
  float f[8] = {};
  cpu::AdamWParams p;
  p.lr = 1e-3f;
  const absl::Status negative = AdamWUpdate(f, nullptr, f, f, f, -1, p, nullptr);
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative.message().find("n must be >= 0"), std::string::npos) << negative;
  p.step = 0;
  const absl::Status step0 = AdamWUpdate(f, nullptr, f, f, f, 8, p, nullptr);
  EXPECT_NE(step0.message().find("step must be >= 1"), std::string::npos) << step0;
  p.step = 1;
  const absl::Status no_m = AdamWUpdate(f, nullptr, f, nullptr, f, 8, p, nullptr);
  EXPECT_EQ(no_m.code(), absl::StatusCode::kInvalidArgument) << no_m;
}

// A rank that converts another rank's updated master weights must get the bf16 bits the
// owner's AdamWUpdate wrote: the same rounding (to nearest even), bit for bit.
TEST(AdamWCuda, ConvertToBf16GivesTheWorkingCopysBits) {
  BELAY_REQUIRE_CUDA_DEVICE();
  cpu::AdamWParams p;
  p.lr = 6e-4f;
  p.weight_decay = 0.1f;
  p.step = 3;
  const int64_t n = 70001;
  State s(n, 4);
  DeviceBuffer<float> master(s.master), grads(s.grads), m(s.m), v(s.v);
  DeviceBuffer<bf16> params(static_cast<size_t>(n)), converted(static_cast<size_t>(n));
  Stream stream;
  ASSERT_TRUE(
      AdamWUpdate(master.get(), params.get(), grads.get(), m.get(), v.get(), n, p, stream.get())
          .ok());
  ASSERT_TRUE(ConvertToBf16(master.get(), converted.get(), n, stream.get()).ok());
  const std::vector<bf16> a = params.Download(), b = converted.Download();
  EXPECT_TRUE(testing::SameBytes(a.data(), b.data(), a.size() * sizeof(bf16)));
  // And the host's round-to-nearest-even of the same values.
  const std::vector<bf16> host = testing::ToBf16(master.Download());
  EXPECT_TRUE(testing::SameBytes(host.data(), b.data(), b.size() * sizeof(bf16)));
  EXPECT_EQ(ConvertToBf16(nullptr, converted.get(), 4, stream.get()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace belay::kernels::cuda
