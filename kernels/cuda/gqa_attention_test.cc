// Fused GQA attention with the document mask on the GPU against the CPU reference.
#include "kernels/cuda/gqa_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_testing.h"
#include "kernels/cuda/testing.h"
#include "kernels/gqa_attention.h"

namespace belay::kernels::cuda {
namespace {

using cpu::GqaShape;
using cpu::testing::AllClose;
using cpu::testing::ToDouble;
using cpu::testing::Uniform;
using testing::DeviceBuffer;
using testing::kBf16Eps;
using testing::RelativeError;
using testing::RoundedToBf16;
using testing::Stream;
using testing::ToBf16;
using testing::ToFloat;

std::string Name(const GqaShape& s, bool docs) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " NH=" + std::to_string(s.NH) +
         " NKV=" + std::to_string(s.NKV) + " hs=" + std::to_string(s.hs) +
         (docs ? " with documents" : " causal");
}

// Document ids of packed rows whose documents end at random tokens (about one in `mean_len`),
// as the data loader derives them from the end-of-document token.
std::vector<int32_t> RandomDocuments(const GqaShape& s, int32_t mean_len, uint32_t seed) {
  const size_t n = static_cast<size_t>(s.B) * s.T;
  const std::vector<int32_t> tokens = cpu::testing::Tokens(n, mean_len, seed);
  std::vector<int32_t> doc(n), pos(n);
  cpu::DocumentIdsAndPositions(doc.data(), pos.data(), tokens.data(), s.B, s.T, /*eod=*/0);
  return doc;
}

// Log-sum-exp of each query row's scaled visible scores, in double: (B,NH,T).
std::vector<double> ReferenceLse(const std::vector<float>& qkv, const std::vector<int32_t>& doc,
                                 const GqaShape& s) {
  const int64_t W = s.QkvWidth();
  const int group = s.NH / s.NKV;
  std::vector<double> out;
  for (int b = 0; b < s.B; ++b) {
    for (int h = 0; h < s.NH; ++h) {
      for (int t = 0; t < s.T; ++t) {
        const float* q = &qkv[static_cast<size_t>((int64_t{b} * s.T + t) * W + int64_t{h} * s.hs)];
        std::vector<double> x;
        for (int u = 0; u <= t; ++u) {
          if (!doc.empty() && doc[size_t(b) * s.T + u] != doc[size_t(b) * s.T + t]) continue;
          const float* k = &qkv[static_cast<size_t>((int64_t{b} * s.T + u) * W +
                                                    int64_t{s.NH + h / group} * s.hs)];
          double dot = 0;
          for (int d = 0; d < s.hs; ++d) dot += static_cast<double>(q[d]) * k[d];
          x.push_back(dot / std::sqrt(static_cast<double>(s.hs)));
        }
        const double mx = *std::max_element(x.begin(), x.end());
        double sum = 0;
        for (double v : x) sum += std::exp(v - mx);
        out.push_back(mx + std::log(sum));
      }
    }
  }
  return out;
}

struct GpuResult {
  std::vector<bf16> out, dqkv;
  std::vector<float> lse;
};

GpuResult RunGpu(const GqaShape& s, const std::vector<float>& qkv, const std::vector<float>& dout,
                 const std::vector<int32_t>& doc) {
  const size_t rows = static_cast<size_t>(s.B) * s.T;
  Stream stream;
  DeviceBuffer<bf16> d_qkv(ToBf16(qkv)), d_dout(ToBf16(dout));
  DeviceBuffer<bf16> d_out(rows * s.NH * s.hs), d_dqkv(qkv.size());
  DeviceBuffer<float> d_lse(rows * s.NH), scratch(GqaAttentionBackwardScratch(s));
  DeviceBuffer<int32_t> d_doc(doc.empty() ? std::vector<int32_t>{0} : doc);
  const int32_t* doc_ptr = doc.empty() ? nullptr : d_doc.get();
  absl::Status st =
      GqaAttentionForward(d_out.get(), d_lse.get(), d_qkv.get(), doc_ptr, s, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  st = GqaAttentionBackward(d_dqkv.get(), scratch.get(), d_dout.get(), d_qkv.get(), d_out.get(),
                            d_lse.get(), doc_ptr, s, stream.get());
  EXPECT_TRUE(st.ok()) << st;
  return {d_out.Download(), d_dqkv.Download(), d_lse.Download()};
}

void Check(const GqaShape& s, const std::vector<int32_t>& doc, uint32_t seed) {
  SCOPED_TRACE(Name(s, !doc.empty()));
  const size_t rows = static_cast<size_t>(s.B) * s.T;
  const std::vector<float> qkv =
      RoundedToBf16(Uniform(rows * static_cast<size_t>(s.QkvWidth()), seed, -2.0f, 2.0f));
  const std::vector<float> dout = RoundedToBf16(Uniform(rows * s.NH * s.hs, seed + 1));
  std::vector<float> out(rows * s.NH * s.hs), att(rows * s.NH * s.T), dqkv(qkv.size(), 0.0f);
  const int32_t* doc_ptr = doc.empty() ? nullptr : doc.data();
  cpu::GqaAttentionForward(out.data(), att.data(), qkv.data(), doc_ptr, s);
  cpu::GqaAttentionBackward(dqkv.data(), dout.data(), qkv.data(), att.data(), s);

  const GpuResult got = RunGpu(s, qkv, dout, doc);
  // out: convex combinations of v in [-2, 2] with fp32 weights, rounded once to bf16.
  const std::vector<float> got_out = ToFloat(got.out);
  EXPECT_TRUE(AllClose(got_out, ToDouble(out), 2e-2, 2 * kBf16Eps)) << "out";
  // Scores of bf16 inputs summed in fp32: the log-sum-exp within 1e-4 of the exact one.
  EXPECT_TRUE(AllClose(got.lse, ReferenceLse(qkv, doc, s), 1e-4, 1e-5)) << "lse";
  // dqkv: the GPU's softmax backward takes sum(a * datt) from the bf16 output and dout
  // (FlashAttention's delta) and rounds each gradient to bf16 once; sums of up to T terms.
  const std::vector<float> got_dqkv = ToFloat(got.dqkv);
  EXPECT_TRUE(AllClose(got_dqkv, ToDouble(dqkv), 5e-2, 5e-2)) << "dqkv";
  const double out_err = RelativeError(got_out, out), grad_err = RelativeError(got_dqkv, dqkv);
  std::printf("  gqa %s: out relative error %.2e, dqkv %.2e\n", Name(s, !doc.empty()).c_str(),
              out_err, grad_err);
  EXPECT_LT(out_err, 4e-3);
  EXPECT_LT(grad_err, 1e-2);
}

TEST(GqaAttentionCuda, CausalMatchesCpuWithinOneTile) {
  BELAY_REQUIRE_CUDA_DEVICE();
  Check({1, 1, 1, 1, 16}, {}, 1);  // a single token sees only itself
  Check({2, 17, 4, 2, 64}, {}, 2);
}

TEST(GqaAttentionCuda, CausalMatchesCpuAcrossPartialTiles) {
  BELAY_REQUIRE_CUDA_DEVICE();
  Check({2, 45, 4, 2, 64}, {}, 3);   // T odd, not a multiple of the 32-row tile
  Check({1, 100, 6, 1, 24}, {}, 4);  // NKV = 1; hs under a warp's width
  Check({1, 96, 3, 3, 128}, {}, 5);  // NKV = NH (no sharing); the largest head size
}

TEST(GqaAttentionCuda, DocumentMaskMatchesCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  GqaShape s{2, 77, 4, 1, 32};
  Check(s, RandomDocuments(s, 9, 6), 7);
  s = {1, 130, 8, 2, 64};
  Check(s, RandomDocuments(s, 30, 8), 9);
  s = {1, 64, 2, 2, 96};
  Check(s, RandomDocuments(s, 3, 10), 11);  // many short documents
}

TEST(GqaAttentionCuda, DocumentsEndingAtTileEdgesMatchCpu) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const GqaShape s{1, 99, 4, 2, 32};
  std::vector<int32_t> doc(99);
  // Documents [0, 31], [32], [33, 63], [64, 64], [65, 98]: boundaries on and beside the tiles'.
  for (int t = 0; t < 99; ++t) doc[size_t(t)] = (t >= 32) + (t >= 33) + (t >= 64) + (t >= 65);
  Check(s, doc, 12);
}

TEST(GqaAttentionCuda, RepeatsBitForBit) {
  BELAY_REQUIRE_CUDA_DEVICE();
  const GqaShape s{2, 200, 8, 2, 64};
  const size_t rows = static_cast<size_t>(s.B) * s.T;
  const std::vector<float> qkv = Uniform(rows * static_cast<size_t>(s.QkvWidth()), 13, -2.0f, 2.0f);
  const std::vector<float> dout = Uniform(rows * s.NH * s.hs, 14);
  const std::vector<int32_t> doc = RandomDocuments(s, 50, 15);
  const GpuResult a = RunGpu(s, qkv, dout, doc), b = RunGpu(s, qkv, dout, doc);
  EXPECT_TRUE(testing::SameBytes(a.out.data(), b.out.data(), a.out.size() * sizeof(bf16)));
  EXPECT_TRUE(cpu::testing::SameBits(a.lse, b.lse));
  EXPECT_TRUE(testing::SameBytes(a.dqkv.data(), b.dqkv.data(), a.dqkv.size() * sizeof(bf16)));
}

// Shape checks come before any device work, so this runs on any machine.
TEST(GqaAttentionCuda, RejectsBadShapes) {
  bf16 h[8] = {};
  float f[8] = {};
  const absl::Status groups = GqaAttentionForward(h, f, h, nullptr, {1, 8, 6, 4, 64}, nullptr);
  EXPECT_EQ(groups.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(groups.message().find("NKV must divide NH"), std::string::npos) << groups;
  const absl::Status wide = GqaAttentionForward(h, f, h, nullptr, {1, 8, 2, 1, 129}, nullptr);
  EXPECT_NE(wide.message().find("hs must be in"), std::string::npos) << wide;
  EXPECT_EQ(GqaAttentionForward(h, f, h, nullptr, {1, 0, 2, 1, 64}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GqaAttentionBackward(h, nullptr, h, h, h, f, nullptr, {1, 8, 2, 1, 64}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GqaAttentionBackwardScratch({2, 10, 4, 2, 64}), 80u);
}

}  // namespace
}  // namespace belay::kernels::cuda
