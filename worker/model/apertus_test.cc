// Apertus model: layout, initialisation, FLOPs, gradient groups, document masking, thread-count
// independence and the gradient against finite differences (PyTorch parity:
// tests/model/apertus_torch_test.cc).
#include "worker/model/apertus.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/rng.h"
#include "worker/model/testing/staging_hook.h"

namespace belay::model {
namespace {

ApertusConfig Small() {
  ApertusConfig c;
  c.vocab_size = 37;
  c.n_layer = 2;
  c.d_model = 16;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_ff = 24;
  c.rope = {.theta = 10000.0, .factor = 8.0, .original_context = 8};
  c.eod_token = 0;
  return c;
}

ApertusConfig Apertus70B() {
  ApertusConfig c;
  c.vocab_size = 131072;
  c.n_layer = 80;
  c.d_model = 8192;
  c.n_head = 64;
  c.n_kv_head = 8;
  c.d_ff = 43008;
  return c;
}

// Random parameters of a useful size (so every op is in its non-linear range) and tokens
// with EOD tokens in every row.
struct Batch {
  std::vector<float> params;
  std::vector<int32_t> inputs, targets;
};
Batch RandomBatch(const ApertusLayout& layout, int B, int T, uint64_t seed) {
  Batch b;
  b.params.resize(static_cast<size_t>(layout.total()));
  InitApertus(layout, b.params, seed);
  SplitMix64 rng(seed + 1);
  for (float& p : b.params) p += static_cast<float>(0.2 * rng.Normal());
  const int V = layout.config().vocab_size;
  for (int i = 0; i < B * T; ++i) {
    const int32_t eod = layout.config().eod_token;
    const bool at_eod = eod >= 0 && (i % T == T / 3 || i % T == 2 * T / 3);
    b.inputs.push_back(at_eod ? eod : 1 + static_cast<int32_t>(rng.Next() % 36));
    b.targets.push_back(static_cast<int32_t>(rng.Next() % static_cast<uint64_t>(V)));
  }
  return b;
}

TEST(ApertusConfig, RejectsKvHeadsThatDoNotDivideTheQueryHeads) {
  ApertusConfig c = Small();
  EXPECT_EQ(c.Invalid(), "");
  c.n_kv_head = 3;
  EXPECT_NE(c.Invalid(), "");
  c = Small();
  c.eod_token = c.vocab_size;
  EXPECT_NE(c.Invalid(), "");
}

TEST(ApertusFlops, Apertus70BMatchesTheTechReportAtSeq4096) {
  ApertusConfig c = Apertus70B();
  ApertusLayout layout(c);
  const double flops = ApertusFlopsPerToken(layout, 4096);
  // The tech report's 4.496e11 FLOPs/token, to the four digits it gives (this count gives
  // 4.4937e11; Megatron-LM's num_floating_point_operations gives the same to 5 digits).
  EXPECT_NEAR(flops, 4.496e11, 0.001 * 4.496e11);
  // Parameters: 80 layers of attention (Q, O: C×C; K, V: C×1024) and MLP (2·C×43008), plus
  // norms, xIELU scalars and the LM head; the input embedding does not count.
  const int64_t C = 8192,
                per_layer = 2 * C * C + 2 * C * 1024 + 2 * C * 43008 + 2 * C + 2 * 128 + 2;
  EXPECT_EQ(layout.NonEmbeddingParameters(), 80 * per_layer + C + 131072 * C);
  // A tied head is the embedding: the same FLOPs.
  c.tie_embeddings = true;
  EXPECT_EQ(ApertusFlopsPerToken(ApertusLayout(c), 4096), flops);
}

TEST(ApertusLayout, HasNoBiasesAndOnlyTheTensorsTheConfigUses) {
  ApertusConfig c = Small();
  ApertusLayout full(c);
  for (const TensorView& t : full.tensors()) EXPECT_EQ(t.name.find("bias"), std::string::npos);
  EXPECT_EQ(full.at("h.attn.qkv.weight").shape, (std::vector<int64_t>{2, (4 + 2 * 2) * 4, 16}));
  EXPECT_EQ(full.at("h.attn.q_norm.weight").shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(full.at("h.mlp.act.a_p").shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(full.at("lm_head.weight").shape, (std::vector<int64_t>{128, 16}));
  c.qk_norm = false;
  c.tie_embeddings = true;
  c.activation = MlpActivation::kSwiglu;
  ApertusLayout lean(c);
  EXPECT_EQ(lean.tensors().size(), full.tensors().size() - 5);
  EXPECT_EQ(lean.at("h.mlp.up.weight").shape, (std::vector<int64_t>{2, 48, 16}));
  EXPECT_EQ(lean.tensors().back().offset + lean.tensors().back().size, lean.total());
}

TEST(InitApertus, IsSeededAndStartsXieluAtAlphaPoint8) {
  ApertusLayout layout(Small());
  std::vector<float> a(static_cast<size_t>(layout.total())), b(a.size()), c(a.size());
  InitApertus(layout, a, 5);
  InitApertus(layout, b, 5);
  InitApertus(layout, c, 6);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  const float ap = a[static_cast<size_t>(layout.at("h.mlp.act.a_p").offset)];
  const float an = a[static_cast<size_t>(layout.at("h.mlp.act.a_n").offset)];
  EXPECT_NEAR(std::log1p(std::exp(ap)), 0.8, 1e-6);
  EXPECT_NEAR(0.5 + std::log1p(std::exp(an)), 0.8, 1e-6);
  EXPECT_EQ(a[static_cast<size_t>(layout.at("final_norm.weight").offset)], 1.0f);
  const TensorView& head = layout.at("lm_head.weight");
  EXPECT_EQ(a[static_cast<size_t>(head.offset + head.size - 1)], 0.0f);  // padded row
}

TEST(ApertusModel, GradientGroupsCoverEveryParameterOnce) {
  ApertusLayout layout(Small());
  std::vector<int> seen(static_cast<size_t>(layout.total()), 0);
  for (const auto& group : ApertusGradientGroups(layout)) {
    for (const Segment& s : group) {
      for (int64_t i = 0; i < s.size; ++i) ++seen[static_cast<size_t>(s.offset + i)];
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), layout.total());
}

TEST(ApertusModel, BackwardIntoStagingBuffersEqualsFlatBackward) {
  for (bool tied : {false, true}) {
    ApertusConfig c = Small();
    c.tie_embeddings = tied;
    ApertusLayout layout(c);
    const int B = 2, T = 9, L = c.n_layer;
    Batch b = RandomBatch(layout, B, T, 13);
    ApertusModel m(layout, B, T);
    m.Forward(b.params.data(), b.inputs.data(), b.targets.data(), nullptr);
    std::vector<float> flat(b.params.size(), 0.0f);
    m.Backward(b.params.data(), flat.data(), 0.1f);
    testing::StagingHook hook(ApertusGradientGroups(layout), layout.total());
    ASSERT_TRUE(m.Backward(b.params.data(), nullptr, 0.1f, hook).ok());
    EXPECT_EQ(hook.Gathered(), flat) << "tied " << tied;
    EXPECT_EQ(hook.calls(), testing::StagingHook::ExpectedCalls(L));
  }
}

TEST(ApertusModel, BackwardAddsToTheGradientsItIsGiven) {
  ApertusLayout layout(Small());
  const int B = 1, T = 8;
  Batch b = RandomBatch(layout, B, T, 17);
  ApertusModel m(layout, B, T);
  m.Forward(b.params.data(), b.inputs.data(), b.targets.data(), nullptr);
  std::vector<float> once(b.params.size(), 0.0f), twice(b.params.size(), 0.0f);
  m.Backward(b.params.data(), once.data(), 0.5f);
  m.Backward(b.params.data(), twice.data(), 0.5f);
  m.Backward(b.params.data(), twice.data(), 0.5f);
  for (size_t i = 0; i < once.size(); ++i) {
    ASSERT_NEAR(twice[i], 2 * once[i], 1e-6f * (1 + std::abs(once[i]))) << "element " << i;
  }
}

TEST(ApertusModel, DocumentsDoNotSeeEachOtherAndRestartPositions) {
  ApertusLayout layout(Small());
  const int T = 12;
  Batch b = RandomBatch(layout, 1, T, 3);
  // Row 1: the first document, then EOD at 4, then the second from 5. Row 2: the second
  // document alone at the start of the row.
  std::vector<int32_t> row1(b.inputs.begin(), b.inputs.begin() + T), row2(T, 7);
  row1[4] = 0;
  for (int t = 5; t < T; ++t) row1[static_cast<size_t>(t)] = 1 + t;
  for (int t = 0; t < T - 5; ++t) row2[static_cast<size_t>(t)] = 6 + t;
  ApertusModel m1(layout, 1, T), m2(layout, 1, T);
  m1.Forward(b.params.data(), row1.data(), b.targets.data(), nullptr);
  m2.Forward(b.params.data(), row2.data(), b.targets.data(), nullptr);
  const size_t Vp = 128;
  for (size_t t = 5; t < static_cast<size_t>(T); ++t) {
    for (size_t v = 0; v < 37; ++v) {
      // Equal up to summation order (the keys sit at other offsets): a leak across the
      // document boundary moves logits by far more.
      const float want = m2.logits()[(t - 5) * Vp + v];
      ASSERT_NEAR(m1.logits()[t * Vp + v], want, 1e-5f * (1 + std::abs(want))) << t << " " << v;
    }
  }
  EXPECT_EQ(m1.loss_mask()[4], 0);
  EXPECT_EQ(m1.losses()[4], 0.0f);
  EXPECT_EQ(m1.positions()[5], 0);
  EXPECT_EQ(m1.documents()[5], 1);
}

std::vector<float> ForwardBackward(const ApertusLayout& layout, const Batch& b, int B, int T) {
  ApertusModel m(layout, B, T);
  std::vector<float> out(static_cast<size_t>(layout.total()), 0.0f);
  const double loss = m.Forward(b.params.data(), b.inputs.data(), b.targets.data(), nullptr);
  m.Backward(b.params.data(), out.data(), 0.01f);
  out.insert(out.end(), m.logits().begin(), m.logits().end());
  out.push_back(static_cast<float>(loss));
  return out;
}

TEST(ApertusModel, ResultsAreBitIdenticalForAnyThreadCount) {
  ApertusLayout layout(Small());
  const int B = 2, T = 16;
  Batch b = RandomBatch(layout, B, T, 11);
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = ForwardBackward(layout, b, B, T);
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    const std::vector<float> many = ForwardBackward(layout, b, B, T);
    ASSERT_EQ(many.size(), one.size());
    EXPECT_EQ(std::memcmp(many.data(), one.data(), one.size() * sizeof(float)), 0)
        << threads << " threads";
  }
  omp_set_num_threads(before);
}

// Every tensor's gradient, probed at a few elements, against central differences of the
// double-accumulated loss, for each activation and both head kinds.
void ExpectGradientMatchesFiniteDifferences(const ApertusConfig& c) {
  ApertusLayout layout(c);
  const int B = 1, T = 10;
  Batch b = RandomBatch(layout, B, T, 21);
  ApertusModel m(layout, B, T);
  std::vector<float> grads(b.params.size(), 0.0f);
  m.Forward(b.params.data(), b.inputs.data(), b.targets.data(), nullptr);
  m.Backward(b.params.data(), grads.data(), 1.0f);
  SplitMix64 pick(4);
  for (const TensorView& t : layout.tensors()) {
    for (int probe = 0; probe < 3; ++probe) {
      int64_t limit = t.size;
      if (t.name == "embed.weight" || t.name == "lm_head.weight") limit = c.vocab_size * c.d_model;
      const size_t i = static_cast<size_t>(t.offset) + pick.Next() % static_cast<uint64_t>(limit);
      const float saved = b.params[i], h = 1e-2f;
      b.params[i] = saved + h;
      const double up = m.Forward(b.params.data(), b.inputs.data(), b.targets.data(), nullptr);
      b.params[i] = saved - h;
      const double down = m.Forward(b.params.data(), b.inputs.data(), b.targets.data(), nullptr);
      b.params[i] = saved;
      const double fd = (up - down) / (2.0 * h);
      EXPECT_NEAR(grads[i], fd, 2e-3 + 2e-2 * std::abs(fd)) << t.name << " element " << i;
    }
  }
}

TEST(ApertusModel, GradientMatchesFiniteDifferencesWithXieluAndUntiedHead) {
  ExpectGradientMatchesFiniteDifferences(Small());
}

TEST(ApertusModel, GradientMatchesFiniteDifferencesWithSwigluAndTiedHead) {
  ApertusConfig c = Small();
  c.activation = MlpActivation::kSwiglu;
  c.tie_embeddings = true;
  ExpectGradientMatchesFiniteDifferences(c);
}

TEST(ApertusModel, GradientMatchesFiniteDifferencesWithGeluWithoutQkNormOrDocuments) {
  ApertusConfig c = Small();
  c.activation = MlpActivation::kGelu;
  c.qk_norm = false;
  c.eod_token = -1;
  ExpectGradientMatchesFiniteDifferences(c);
}

}  // namespace
}  // namespace belay::model
