// RoPE with Llama-3 scaling and explicit positions on the GPU against the CPU reference.
#include "kernels/cuda/rope.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/rope.h"

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

// The same fp32 frequencies and the same fp32 products and sums (no FMA on either side); the
// angles' cos and sin come from the device's double-precision functions (within an ulp or two
// of the host's), so a value may round to the other neighbouring bf16 at most.
constexpr double kAtol = 1e-6, kRtol = 2 * kBf16Eps;

// Apertus' RoPE: theta 500,000 with Llama-3 scaling factor 8 (the other fields' defaults: low 1,
// high 4, original context 8192).
cpu::RopeParams Llama31() { return {.theta = 500000.0, .factor = 8.0}; }

// Position ids that restart at 0 at document starts, with some long positions.
std::vector<int32_t> Positions(int N, uint32_t seed) {
  const std::vector<int32_t> len = cpu::testing::Tokens(static_cast<size_t>(N), 40, seed);
  std::vector<int32_t> pos(static_cast<size_t>(N));
  int32_t p = 0;
  for (size_t n = 0; n < pos.size(); ++n) {
    pos[n] = n % 7 == 3 ? 100000 + static_cast<int32_t>(n) : p++;
    if (len[n] == 0) p = 0;
  }
  return pos;
}

struct Case {
  int N, H, hs;
  int64_t stride, offset;
  bool in_place;
};

// Rotates (sign 1: forward, -1: backward) on both sides and compares the whole buffers: the
// values outside the heads must come back as they were (in place: the input's; else the output
// buffer's, which starts as the input with the heads NaN).
void Check(const Case& c, const cpu::RopeParams& p, int sign, uint32_t seed) {
  SCOPED_TRACE("N=" + std::to_string(c.N) + " H=" + std::to_string(c.H) +
               " hs=" + std::to_string(c.hs) + " stride=" + std::to_string(c.stride) +
               (c.in_place ? " in place" : "") + (sign > 0 ? " forward" : " backward"));
  const size_t size = static_cast<size_t>(c.N * c.stride);
  const std::vector<float> inp = RoundedToBf16(Uniform(size, seed, -2.0f, 2.0f));
  const std::vector<int32_t> pos = Positions(c.N, seed + 1);
  // An output buffer apart from the input starts as the input with the heads NaN.
  std::vector<float> out0 = inp;
  for (size_t i = 0; i < size; ++i) {
    const int64_t col = static_cast<int64_t>(i) % c.stride - c.offset;
    if (col >= 0 && col < int64_t{c.H} * c.hs) out0[i] = std::numeric_limits<float>::quiet_NaN();
  }
  std::vector<float> want = out0;
  const float* src = inp.data() + c.offset;
  float* dst = want.data() + c.offset;
  if (sign > 0) {
    cpu::RopeForward(dst, src, pos.data(), c.N, c.H, c.hs, c.stride, p);
  } else {
    cpu::RopeBackward(dst, src, pos.data(), c.N, c.H, c.hs, c.stride, p);
  }

  Stream stream;
  DeviceBuffer<float> inv_freq(static_cast<size_t>(c.hs / 2));
  ASSERT_TRUE(RopeUploadInverseFrequencies(inv_freq.get(), c.hs, p, stream.get()).ok());
  std::vector<float> host_freq(static_cast<size_t>(c.hs / 2));
  cpu::RopeInverseFrequencies(host_freq.data(), c.hs, p);
  EXPECT_TRUE(cpu::testing::SameBits(inv_freq.Download(), host_freq));
  DeviceBuffer<bf16> d_inp(ToBf16(inp)), d_out(ToBf16(out0));
  DeviceBuffer<int32_t> d_pos(pos);
  bf16* out = (c.in_place ? d_inp.get() : d_out.get()) + c.offset;
  const bf16* in = d_inp.get() + c.offset;
  const absl::Status st = sign > 0 ? RopeForward(out, in, d_pos.get(), inv_freq.get(), c.N, c.H,
                                                 c.hs, c.stride, stream.get())
                                   : RopeBackward(out, in, d_pos.get(), inv_freq.get(), c.N, c.H,
                                                  c.hs, c.stride, stream.get());
  ASSERT_TRUE(st.ok()) << st;
  const std::vector<float> got = ToFloat((c.in_place ? d_inp : d_out).Download());
  EXPECT_TRUE(AllClose(got, ToDouble(want), kAtol, kRtol));
}

TEST(RopeCuda, ForwardAndBackwardMatchCpuWithLlama3Scaling) {
  BELAY_REQUIRE_CUDA_DEVICE();
  for (int sign : {1, -1}) {
    Check({64, 8, 128, 8 * 128, 0, false}, Llama31(), sign, 1);
    Check({37, 3, 6, 3 * 6, 0, false}, Llama31(), sign, 2);
  }
}

TEST(RopeCuda, MatchesCpuWithoutScaling) {
  BELAY_REQUIRE_CUDA_DEVICE();
  cpu::RopeParams p;
  p.theta = 10000.0;
  Check({50, 4, 64, 4 * 64, 0, false}, p, 1, 3);
  Check({50, 4, 64, 4 * 64, 0, false}, p, -1, 4);
}

TEST(RopeCuda, RotatesHeadsInsidePackedRowsInPlace) {
  BELAY_REQUIRE_CUDA_DEVICE();
  // q (4 heads) then k (2 heads) of a qkv row with NKV = 2: both rotated, v left alone.
  const int hs = 32;
  const int64_t width = int64_t{4 + 2 * 2} * hs;
  Check({45, 6, hs, width, 0, true}, Llama31(), 1, 5);
  Check({45, 6, hs, width, 0, true}, Llama31(), -1, 6);
  Check({45, 2, hs, width, 4 * hs, false}, Llama31(), 1, 7);  // the keys only
}

TEST(RopeCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const int N = 500, H = 4, hs = 128;
  const std::vector<float> inp = Uniform(size_t{N} * H * hs, 8);
  Stream stream;
  DeviceBuffer<float> inv_freq(hs / 2);
  ASSERT_TRUE(RopeUploadInverseFrequencies(inv_freq.get(), hs, Llama31(), stream.get()).ok());
  DeviceBuffer<int32_t> pos(Positions(N, 9));
  DeviceBuffer<bf16> d_inp(ToBf16(inp));
  std::vector<std::vector<bf16>> runs;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> out(inp.size());
    ASSERT_TRUE(RopeForward(out.get(), d_inp.get(), pos.get(), inv_freq.get(), N, H, hs, H * hs,
                            stream.get())
                    .ok());
    runs.push_back(out.Download());
  }
  EXPECT_TRUE(testing::SameBytes(runs[0].data(), runs[1].data(), inp.size() * sizeof(bf16)));
}

TEST(RopeCuda, RejectsBadShapes) {
  bf16 h[8] = {};
  float f[8] = {};
  int32_t pos[2] = {};
  const absl::Status odd = RopeForward(h, h, pos, f, 1, 1, 3, 3, nullptr);
  EXPECT_EQ(odd.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(odd.message().find("even"), std::string::npos) << odd;
  const absl::Status narrow = RopeBackward(h, h, pos, f, 2, 2, 4, 7, nullptr);
  EXPECT_NE(narrow.message().find("stride"), std::string::npos) << narrow;
  EXPECT_EQ(RopeForward(h, h, nullptr, f, 1, 1, 4, 4, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RopeUploadInverseFrequencies(f, 5, cpu::RopeParams{}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace belay::kernels::cuda
