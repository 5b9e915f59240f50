// Linear layers on the GPU (cuBLASLt, fused bias/GELU epilogues) against the CPU reference.
#include "kernels/cuda/matmul.h"

#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/gelu.h"
#include "kernels/matmul.h"

namespace belay::kernels::cuda {
namespace {

using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::kBf16Eps;
using testing::RoundedToBf16;
using testing::ToBf16;
using testing::ToFloat;

struct Shape {
  int N, C, OC;
};

std::unique_ptr<Blas> MakeBlas() {
  absl::StatusOr<std::unique_ptr<Blas>> blas = Blas::Create();
  EXPECT_TRUE(blas.ok()) << blas.status();
  return blas.ok() ? std::move(*blas) : nullptr;
}

// bf16 output of an fp32 accumulation over C products of values in [-1, 1]: one final
// rounding (rtol 2^-8) plus summation-order differences, well under 1e-2 absolute here.
constexpr double kOutAtol = 1e-2;
constexpr double kOutRtol = 2 * kBf16Eps;

void CheckForward(Shape s, bool with_bias, bool with_gelu, uint32_t seed) {
  const size_t N = s.N, C = s.C, OC = s.OC;
  std::vector<float> inp = RoundedToBf16(Uniform(N * C, seed));
  std::vector<float> w = RoundedToBf16(Uniform(OC * C, seed + 1, -0.5f, 0.5f));
  std::vector<float> b = RoundedToBf16(Uniform(OC, seed + 2));
  std::vector<float> pre(N * OC), ref(N * OC);
  cpu::MatmulForward(pre.data(), inp.data(), w.data(), with_bias ? b.data() : nullptr, s.N, s.C,
                     s.OC);
  if (with_gelu) {
    cpu::GeluForward(ref.data(), pre.data(), static_cast<int64_t>(N * OC));
  } else {
    ref = pre;
  }

  auto blas = MakeBlas();
  ASSERT_NE(blas, nullptr);
  DeviceBuffer<bf16> d_inp(ToBf16(inp)), d_w(ToBf16(w)), d_b(ToBf16(b));
  DeviceBuffer<bf16> d_out(N * OC), d_pre(N * OC);
  absl::Status st =
      MatmulForward(*blas, d_out.get(), with_gelu ? d_pre.get() : nullptr, d_inp.get(), d_w.get(),
                    with_bias ? d_b.get() : nullptr, s.N, s.C, s.OC, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(AllClose(ToFloat(d_out.Download()), ToDouble(ref), kOutAtol, kOutRtol));
  if (with_gelu) {
    EXPECT_TRUE(AllClose(ToFloat(d_pre.Download()), ToDouble(pre), kOutAtol, kOutRtol));
  }
}

TEST(MatmulCuda, ForwardMatchesReference) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForward({37, 64, 96}, false, false, 1);
  CheckForward({128, 72, 200}, false, false, 2);
}

TEST(MatmulCuda, ForwardWithBiasEpilogueMatchesReference) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForward({37, 64, 96}, true, false, 3);
  CheckForward({256, 768, 2304}, true, false, 4);
}

TEST(MatmulCuda, ForwardWithBiasAndGeluEpilogueKeepsPreActivation) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckForward({64, 64, 256}, true, true, 5);
  CheckForward({256, 768, 3072}, true, true, 6);
}

void CheckBackward(Shape s, bool with_gelu, uint32_t seed) {
  const size_t N = s.N, C = s.C, OC = s.OC;
  std::vector<float> inp = RoundedToBf16(Uniform(N * C, seed));
  std::vector<float> w = RoundedToBf16(Uniform(OC * C, seed + 1, -0.5f, 0.5f));
  std::vector<float> dout = RoundedToBf16(Uniform(N * OC, seed + 2));
  std::vector<float> pre = RoundedToBf16(Uniform(N * C, seed + 3, -3.0f, 3.0f));
  // The gradients start non-zero: the kernels accumulate.
  std::vector<float> dw0 = Uniform(OC * C, seed + 4), db0 = Uniform(OC, seed + 5);

  std::vector<float> dx(N * C, 0.0f), dw = dw0, db = db0;
  cpu::MatmulBackward(dx.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(), s.N, s.C,
                      s.OC);
  std::vector<float> dinp_ref = dx;
  if (with_gelu) {
    std::fill(dinp_ref.begin(), dinp_ref.end(), 0.0f);
    cpu::GeluBackward(dinp_ref.data(), pre.data(), dx.data(), static_cast<int64_t>(N * C));
  }

  auto blas = MakeBlas();
  ASSERT_NE(blas, nullptr);
  DeviceBuffer<bf16> d_inp(ToBf16(inp)), d_w(ToBf16(w)), d_dout(ToBf16(dout)), d_pre(ToBf16(pre));
  DeviceBuffer<bf16> d_dinp(N * C);
  DeviceBuffer<float> d_dw(dw0), d_db(db0), scratch(MatmulBackwardScratch(s.N, s.OC));
  absl::Status st = MatmulBackward(*blas, d_dinp.get(), d_dw.get(), d_db.get(), scratch.get(),
                                   d_dout.get(), d_inp.get(), d_w.get(),
                                   with_gelu ? d_pre.get() : nullptr, s.N, s.C, s.OC, nullptr);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(AllClose(ToFloat(d_dinp.Download()), ToDouble(dinp_ref), kOutAtol, kOutRtol));
  // fp32 results of N exact bf16 products each: only the summation order differs.
  const double sum_tol = 1e-5 * s.N;
  EXPECT_TRUE(AllClose(d_dw.Download(), ToDouble(dw), sum_tol, 1e-5));
  EXPECT_TRUE(AllClose(d_db.Download(), ToDouble(db), sum_tol, 1e-5));
}

TEST(MatmulCuda, BackwardAccumulatesWeightAndBiasGradients) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckBackward({37, 64, 96}, false, 11);
  CheckBackward({1000, 768, 768}, false, 12);
}

TEST(MatmulCuda, BackwardThroughGeluEpilogueMatchesReference) {
  BELAY_REQUIRE_CUDA_DEVICE();
  CheckBackward({64, 256, 64}, true, 13);
  CheckBackward({512, 3072, 768}, true, 14);
}

TEST(MatmulCuda, BackwardRepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const int N = 777, C = 256, OC = 384;
  DeviceBuffer<bf16> inp(ToBf16(Uniform(size_t{N} * C, 21)));
  DeviceBuffer<bf16> w(ToBf16(Uniform(size_t{OC} * C, 22)));
  DeviceBuffer<bf16> dout(ToBf16(Uniform(size_t{N} * OC, 23)));
  auto blas = MakeBlas();
  ASSERT_NE(blas, nullptr);
  std::vector<std::vector<float>> dws, dbs;
  std::vector<std::vector<bf16>> dxs;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> dx(size_t{N} * C);
    DeviceBuffer<float> dw(std::vector<float>(size_t{OC} * C, 0.0f));
    DeviceBuffer<float> db(std::vector<float>(OC, 0.0f));
    DeviceBuffer<float> scratch(MatmulBackwardScratch(N, OC));
    ASSERT_TRUE(MatmulBackward(*blas, dx.get(), dw.get(), db.get(), scratch.get(), dout.get(),
                               inp.get(), w.get(), nullptr, N, C, OC, nullptr)
                    .ok());
    dws.push_back(dw.Download());
    dbs.push_back(db.Download());
    dxs.push_back(dx.Download());
  }
  EXPECT_TRUE(cpu::testing::SameBits(dws[0], dws[1]));
  EXPECT_TRUE(cpu::testing::SameBits(dbs[0], dbs[1]));
  EXPECT_TRUE(testing::SameBytes(dxs[0].data(), dxs[1].data(), dxs[0].size() * sizeof(bf16)));
}

TEST(MatmulCuda, RejectsBadShapes) {
  BELAY_REQUIRE_CUDA_DEVICE();
  auto blas = MakeBlas();
  ASSERT_NE(blas, nullptr);
  DeviceBuffer<bf16> x(64 * 64);
  EXPECT_EQ(
      MatmulForward(*blas, x.get(), nullptr, x.get(), x.get(), nullptr, 0, 8, 8, nullptr).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      MatmulForward(*blas, x.get(), x.get(), x.get(), x.get(), nullptr, 4, 8, 12, nullptr).code(),
      absl::StatusCode::kInvalidArgument);  // GELU needs OC % 8 == 0
  EXPECT_EQ(MatmulBackward(*blas, x.get(), nullptr, nullptr, nullptr, x.get(), x.get(), x.get(),
                           nullptr, 4, 8, 8, nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace belay::kernels::cuda
