// Fused softmax + cross-entropy on the GPU against the CPU reference: losses, the in-place
// gradient, the loss mask and the padding columns.
#include "kernels/cuda/softmax_xent.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/softmax_xent.h"

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

// Losses: fp32 log-sum-exp of the same bf16 logits. The reference sums up to 50k positive terms
// in sequence, the kernel in a tree: the sums differ by ~sqrt(V)·2^-24 relative (~1.3e-5 at
// V = 50257), which log() turns into the same absolute error on a loss of ~10.
constexpr double kLossAtol = 1e-4, kLossRtol = 1e-5;
// Gradient in bf16: one final rounding either side (2 × kBf16Eps) of probabilities that agree
// to ~1e-5 relative; the atol covers p − 1 at the target, whose error is absolute.
constexpr double kGradAtol = 1e-5, kGradRtol = 2 * kBf16Eps;

struct Case {
  int N, V, Vp;
  std::vector<float> logits;  // rounded to bf16; padding columns hold large values
  std::vector<int32_t> targets;
  std::vector<uint8_t> mask;

  Case(int n, int v, int vp, uint32_t seed) : N(n), V(v), Vp(vp) {
    logits = Uniform(static_cast<size_t>(N) * Vp, seed, -4.0f, 4.0f);
    for (int i = 0; i < N; ++i) {
      // Padding columns would dominate the softmax if they were counted.
      for (int j = V; j < Vp; ++j) logits[static_cast<size_t>(i) * Vp + j] = 30.0f;
    }
    logits = RoundedToBf16(logits);
    targets = Tokens(static_cast<size_t>(N), V, seed + 1);
    mask.assign(static_cast<size_t>(N), 1);
    for (int i = 0; i < N; i += 3) {  // every third row excluded, its target unreadable
      mask[static_cast<size_t>(i)] = 0;
      targets[static_cast<size_t>(i)] = -1;
    }
  }
};

struct Result {
  std::vector<float> losses;
  std::vector<bf16> logits;  // the gradient when write_grad
};

Result RunGpu(const Case& k, float scale, bool write_grad) {
  DeviceBuffer<bf16> logits(ToBf16(k.logits));
  DeviceBuffer<float> losses(static_cast<size_t>(k.N));
  DeviceBuffer<int32_t> targets(k.targets);
  DeviceBuffer<uint8_t> mask(k.mask);
  Stream stream;
  const absl::Status st = SoftmaxCrossEntropy(logits.get(), losses.get(), targets.get(), mask.get(),
                                              scale, write_grad, k.N, k.V, k.Vp, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return {losses.Download(), logits.Download()};
}

void CheckAgainstCpu(int N, int V, int Vp, uint32_t seed) {
  SCOPED_TRACE("N=" + std::to_string(N) + " V=" + std::to_string(V) + " Vp=" + std::to_string(Vp));
  const Case k(N, V, Vp, seed);
  const float scale = 1.0f / 3.0f;
  std::vector<float> losses(static_cast<size_t>(N)), probs(k.logits.size()),
      dlogits(k.logits.size());
  cpu::SoftmaxCrossEntropyForward(losses.data(), probs.data(), k.logits.data(), k.targets.data(),
                                  k.mask.data(), N, V, Vp);
  cpu::SoftmaxCrossEntropyBackward(dlogits.data(), probs.data(), k.targets.data(), k.mask.data(),
                                   scale, N, V, Vp);
  const Result got = RunGpu(k, scale, true);
  EXPECT_TRUE(AllClose(got.losses, ToDouble(losses), kLossAtol, kLossRtol)) << "losses";
  EXPECT_TRUE(AllClose(ToFloat(got.logits), ToDouble(dlogits), kGradAtol * scale, kGradRtol))
      << "dlogits";
}

TEST(SoftmaxCrossEntropyCuda, LossAndGradientMatchCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckAgainstCpu(16, 1000, 1024, 1);
}

TEST(SoftmaxCrossEntropyCuda, LossAndGradientMatchCpuAtGpt2Vocabulary) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckAgainstCpu(8, 50257, 50304, 2);  // V not a multiple of 8: a pack straddles V
}

TEST(SoftmaxCrossEntropyCuda, LossAndGradientMatchCpuWithUnalignedRows) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckAgainstCpu(5, 997, 1003, 3);  // Vp not a multiple of 8: the scalar path
}

TEST(SoftmaxCrossEntropyCuda, MaskedRowsGetZeroLossAndGradient) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const Case k(9, 1000, 1024, 4);  // rows 0, 3, 6 masked with target -1
  const Result got = RunGpu(k, 0.5f, true);
  for (int i = 0; i < k.N; i += 3) {
    EXPECT_EQ(got.losses[static_cast<size_t>(i)], 0.0f) << "row " << i;
    for (int j = 0; j < k.Vp; ++j) {
      ASSERT_EQ(__bfloat162float(got.logits[static_cast<size_t>(i) * k.Vp + j]), 0.0f)
          << "row " << i << " column " << j;
    }
  }
  for (int i = 1; i < k.N; i += 3) EXPECT_GT(got.losses[static_cast<size_t>(i)], 0.0f);
}

TEST(SoftmaxCrossEntropyCuda, PaddingColumnsGetZeroGradientAndNoProbability) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const Case k(4, 1000, 1024, 5);  // padding logits are 30, far above the real ones
  const Result got = RunGpu(k, 1.0f, true);
  for (int i = 0; i < k.N; ++i) {
    double row_sum = 0;
    for (int j = 0; j < k.Vp; ++j) {
      const float d = __bfloat162float(got.logits[static_cast<size_t>(i) * k.Vp + j]);
      if (j >= k.V) {
        ASSERT_EQ(d, 0.0f) << "row " << i << " column " << j;
      }
      row_sum += d;
    }
    // On a counted row the gradient is p − onehot: it sums to 0 when p sums to 1 over V.
    if (k.mask[static_cast<size_t>(i)] != 0) {
      EXPECT_NEAR(row_sum, 0.0, 0.02) << "row " << i;
    }
  }
}

TEST(SoftmaxCrossEntropyCuda, WithoutGradientLeavesLogitsUntouched) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const Case k(6, 1000, 1024, 6);
  std::vector<float> losses(static_cast<size_t>(k.N)), probs(k.logits.size());
  cpu::SoftmaxCrossEntropyForward(losses.data(), probs.data(), k.logits.data(), k.targets.data(),
                                  k.mask.data(), k.N, k.V, k.Vp);
  const Result got = RunGpu(k, 1.0f, false);
  EXPECT_TRUE(AllClose(got.losses, ToDouble(losses), kLossAtol, kLossRtol));
  const std::vector<bf16> before = ToBf16(k.logits);
  EXPECT_TRUE(testing::SameBytes(got.logits.data(), before.data(), before.size() * sizeof(bf16)));
}

// The launcher checks its arguments before touching the device, so this runs anywhere. The
// pointers are never dereferenced.
TEST(SoftmaxCrossEntropyCuda, RejectsBadShapes) {
  bf16 h[8] = {};
  float f[8] = {};
  int32_t t[8] = {};
  uint8_t m[8] = {};
  const absl::Status wide = SoftmaxCrossEntropy(h, f, t, m, 1.0f, true, 2, 1025, 1024, nullptr);
  EXPECT_EQ(wide.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wide.message().find("Vp must be >= V"), std::string::npos) << wide;
  const absl::Status n0 = SoftmaxCrossEntropy(h, f, t, m, 1.0f, true, 0, 8, 8, nullptr);
  EXPECT_NE(n0.message().find("N must be > 0"), std::string::npos) << n0;
  const absl::Status v0 = SoftmaxCrossEntropy(h, f, t, m, 1.0f, true, 1, 0, 8, nullptr);
  EXPECT_NE(v0.message().find("V must be > 0"), std::string::npos) << v0;
  const absl::Status no_mask = SoftmaxCrossEntropy(h, f, t, nullptr, 1.0f, true, 1, 8, 8, nullptr);
  EXPECT_NE(no_mask.message().find("mask is null"), std::string::npos) << no_mask;
}

}  // namespace
}  // namespace belay::kernels::cuda
