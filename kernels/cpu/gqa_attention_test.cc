// Tests for the CPU GQA attention with a document mask against a double reference with the
// key/value heads expanded per query head, finite differences, and the multi-head kernel.
#include "kernels/gqa_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/kernel_testing.h"

namespace belay::kernels::cpu {
namespace {

using testing::AllClose;

// fp32 dot products over the head size and softmax sums over T keys, O(1) values.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;

struct GqaCase {
  GqaShape s{.B = 2, .T = 7, .NH = 4, .NKV = 2, .hs = 4};
  std::vector<float> qkv, dout;
  std::vector<int32_t> doc;  // empty: no document mask

  explicit GqaCase(uint32_t seed) { Init(seed); }
  void Init(uint32_t seed) {
    qkv = testing::Uniform(static_cast<size_t>(s.B) * s.T * s.QkvWidth(), seed, -2.0f, 2.0f);
    dout = testing::Uniform(static_cast<size_t>(s.B) * s.T * s.NH * s.hs, seed + 1);
  }
  const int32_t* Doc() const { return doc.empty() ? nullptr : doc.data(); }
  size_t AttSize() const { return static_cast<size_t>(s.B) * s.NH * s.T * s.T; }
  std::vector<float> Forward(std::vector<float>* att_out = nullptr) const {
    auto out = testing::Poisoned(dout.size());
    auto att = testing::Poisoned(AttSize());
    GqaAttentionForward(out.data(), att.data(), qkv.data(), Doc(), s);
    if (att_out != nullptr) *att_out = att;
    return out;
  }
  std::vector<float> Backward(std::vector<float> dqkv) const {
    std::vector<float> att;
    Forward(&att);
    GqaAttentionBackward(dqkv.data(), dout.data(), qkv.data(), att.data(), s);
    return dqkv;
  }
};

struct Reference {
  std::vector<double> out, dqkv;
};

// Each query head h gets its own copies of key/value head h / (NH / NKV); softmax over the keys
// t2 <= t of t's document; the copies' gradients are summed back onto the shared head.
Reference ReferenceGqa(const GqaCase& k) {
  const GqaShape& s = k.s;
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.hs));
  Reference r{std::vector<double>(k.dout.size(), 0.0), std::vector<double>(k.qkv.size(), 0.0)};
  auto idx = [&s](int b, int t, int head) {  // head counts q heads, then k, then v heads
    return (static_cast<size_t>(b) * s.T + t) * s.QkvWidth() + static_cast<size_t>(head) * s.hs;
  };
  for (int b = 0; b < s.B; ++b) {
    for (int h = 0; h < s.NH; ++h) {
      const int kh = s.NH + h / (s.NH / s.NKV), vh = kh + s.NKV;
      for (int t = 0; t < s.T; ++t) {
        std::vector<double> a(static_cast<size_t>(t) + 1, 0.0), datt(a.size(), 0.0);
        auto seen = [&](int t2) {
          return k.doc.empty() || k.doc[static_cast<size_t>(b * s.T + t2)] ==
                                      k.doc[static_cast<size_t>(b * s.T + t)];
        };
        double sum = 0;
        for (int t2 = 0; t2 <= t; ++t2) {
          if (!seen(t2)) continue;
          double dot = 0;
          for (int i = 0; i < s.hs; ++i) dot += k.qkv[idx(b, t, h) + i] * k.qkv[idx(b, t2, kh) + i];
          a[t2] = std::exp(dot * scale);
          sum += a[t2];
        }
        const size_t o = (static_cast<size_t>(b) * s.T + t) * s.NH * s.hs + h * s.hs;
        double adot = 0;
        for (int t2 = 0; t2 <= t; ++t2) {
          a[t2] /= sum;
          for (int i = 0; i < s.hs; ++i) {
            r.out[o + i] += a[t2] * k.qkv[idx(b, t2, vh) + i];
            datt[t2] += k.dout[o + i] * k.qkv[idx(b, t2, vh) + i];
            r.dqkv[idx(b, t2, vh) + i] += a[t2] * k.dout[o + i];
          }
          adot += a[t2] * datt[t2];
        }
        for (int t2 = 0; t2 <= t; ++t2) {
          const double dpre = a[t2] * (datt[t2] - adot) * scale;
          for (int i = 0; i < s.hs; ++i) {
            r.dqkv[idx(b, t, h) + i] += dpre * k.qkv[idx(b, t2, kh) + i];
            r.dqkv[idx(b, t2, kh) + i] += dpre * k.qkv[idx(b, t, h) + i];
          }
        }
      }
    }
  }
  return r;
}

// Two packed documents in row 0 (restart at t = 3), three in row 1.
std::vector<int32_t> PackedDocs() { return {0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 2, 2, 2, 2}; }

TEST(CpuGqaAttention, ForwardAndBackwardMatchTheExpandedHeadReference) {
  for (bool masked : {false, true}) {
    GqaCase k(1);
    if (masked) k.doc = PackedDocs();
    const Reference ref = ReferenceGqa(k);
    EXPECT_TRUE(AllClose(k.Forward(), ref.out, kAtol, kRtol)) << "masked " << masked;
    const auto dqkv0 = testing::Uniform(k.qkv.size(), 2);
    EXPECT_TRUE(AllClose(k.Backward(dqkv0), testing::Accumulated(dqkv0, ref.dqkv, 1), kAtol, kRtol))
        << "masked " << masked;
  }
}

TEST(CpuGqaAttention, BackwardMatchesFiniteDifferences) {
  GqaCase k(3);
  k.doc = PackedDocs();
  const auto dqkv = k.Backward(std::vector<float>(k.qkv.size(), 0.0f));
  auto loss = [&k] { return testing::Dot(k.dout, k.Forward()); };
  const int64_t W = k.s.QkvWidth();
  const int hs = k.s.hs;
  // A query value; a key and a value of head 0, shared by query heads 0 and 1; in row 1.
  for (int64_t i :
       {int64_t{1}, 2 * W + 4 * hs + 1, 5 * W + 6 * hs + 2, 9 * W + 5 * hs + 3, 12 * W + 3 * hs}) {
    EXPECT_NEAR(testing::CentralDifference(k.qkv, static_cast<size_t>(i), 1e-2f, loss),
                dqkv[static_cast<size_t>(i)], 2e-3)
        << "qkv " << i;
  }
}

// The tokens of a later document give the same bits as that document alone at a row's start,
// forward and backward: nothing leaks across the boundary.
TEST(CpuGqaAttention, DocumentsAreIsolatedBitForBit) {
  GqaCase packed(4);
  packed.s.B = 1;
  packed.s.T = 9;
  packed.Init(40);
  packed.doc = {0, 0, 0, 0, 1, 1, 1, 1, 1};
  GqaCase alone(4);
  alone.s.B = 1;
  alone.s.T = 5;
  const int64_t W = packed.s.QkvWidth();
  const int64_t ow = int64_t{packed.s.NH} * packed.s.hs;
  alone.qkv.assign(packed.qkv.begin() + 4 * W, packed.qkv.end());
  alone.dout.assign(packed.dout.begin() + 4 * ow, packed.dout.end());
  const auto out_packed = packed.Forward();
  EXPECT_TRUE(testing::SameBits(std::vector<float>(out_packed.begin() + 4 * ow, out_packed.end()),
                                alone.Forward()));
  const auto d_packed = packed.Backward(std::vector<float>(packed.qkv.size(), 0.0f));
  EXPECT_TRUE(testing::SameBits(std::vector<float>(d_packed.begin() + 4 * W, d_packed.end()),
                                alone.Backward(std::vector<float>(alone.qkv.size(), 0.0f))));
}

// With a key/value head per query head and no mask it is the multi-head kernel.
TEST(CpuGqaAttention, EqualsMultiHeadAttentionWhenEveryQueryHeadHasItsOwnKeys) {
  GqaCase k(5);
  k.s.NKV = k.s.NH;
  k.Init(50);
  const int C = k.s.NH * k.s.hs;
  auto out = testing::Poisoned(k.dout.size());
  std::vector<float> att(k.AttSize()), scratch(k.AttSize());
  AttentionForward(out.data(), att.data(), k.qkv.data(), k.s.B, k.s.T, C, k.s.NH);
  EXPECT_TRUE(testing::SameBits(out, k.Forward()));
  std::vector<float> dqkv(k.qkv.size(), 0.0f);
  AttentionBackward(dqkv.data(), scratch.data(), k.dout.data(), k.qkv.data(), att.data(), k.s.B,
                    k.s.T, C, k.s.NH);
  EXPECT_TRUE(testing::SameBits(dqkv, k.Backward(std::vector<float>(k.qkv.size(), 0.0f))));
}

TEST(CpuGqaAttentionDeathTest, KeyValueHeadsMustDivideQueryHeads) {
  GqaCase k(7);
  k.s.NKV = 3;  // 4 query heads
  k.Init(70);
  EXPECT_DEATH(k.Forward(), "NKV must divide NH");
}

TEST(CpuGqaAttention, DocumentIdsAndPositionsRestartAfterEachEndOfDocument) {
  constexpr int32_t kEod = 0;
  const std::vector<int32_t> tokens = {5, 0, 7, 8, 0, 0, 9,  //
                                       0, 3, 3, 3, 3, 3, 0};
  std::vector<int32_t> doc(tokens.size(), -1), pos(tokens.size(), -1);
  DocumentIdsAndPositions(doc.data(), pos.data(), tokens.data(), 2, 7, kEod);
  EXPECT_EQ(doc, (std::vector<int32_t>{0, 0, 1, 1, 1, 2, 3, 0, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(pos, (std::vector<int32_t>{0, 1, 0, 1, 2, 0, 0, 0, 0, 1, 2, 3, 4, 5}));
}

TEST(CpuGqaAttention, ResultsAreBitIdenticalForAnyThreadCount) {
  GqaCase k(6);
  k.s = GqaShape{.B = 3, .T = 40, .NH = 8, .NKV = 2, .hs = 16};
  k.Init(60);
  for (int b = 0; b < k.s.B; ++b) {
    for (int t = 0; t < k.s.T; ++t) k.doc.push_back(t / (7 + 5 * b));
  }
  auto run = [&k] {
    auto out = k.Forward();
    const auto d = k.Backward(testing::Uniform(k.qkv.size(), 61));
    out.insert(out.end(), d.begin(), d.end());
    return out;
  };
  EXPECT_TRUE(testing::SameBitsForAnyThreadCount(run));
}

}  // namespace
}  // namespace belay::kernels::cpu
