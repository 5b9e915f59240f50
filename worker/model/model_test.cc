// GPT-2 building blocks: layout, initialisation, schedules, Goldfish masks, and the model's
// gradient against finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "common/rng.h"
#include "worker/model/goldfish.h"
#include "worker/model/gpt2.h"
#include "worker/model/params.h"
#include "worker/model/schedule.h"
#include "worker/model/testing/staging_hook.h"

namespace belay::model {
namespace {

Gpt2Config Tiny() {
  ModelSpec m;
  m.n_layer = 2;
  m.n_head = 2;
  m.d_model = 8;
  m.seq_len = 6;
  m.vocab_size = 11;
  return Gpt2Config::FromSpec(m);
}

TEST(ParameterLayout, Gpt2SmallHasTheKnownParameterCount) {
  ModelSpec m;
  m.n_layer = 12;
  m.n_head = 12;
  m.d_model = 768;
  m.seq_len = 1024;
  m.vocab_size = 50257;
  ParameterLayout layout(Gpt2Config::FromSpec(m));
  EXPECT_EQ(layout.config().padded_vocab, 50304);
  // GPT-2 124M with the vocabulary padded to 50304, as llm.c counts it.
  EXPECT_EQ(layout.total(), 124475904);
  EXPECT_EQ(layout.tensors().back().offset + layout.tensors().back().size, layout.total());
}

TEST(InitGpt2, FollowsGpt2InitialisationAndIsSeeded) {
  ModelSpec m;
  m.n_layer = 4;
  m.n_head = 4;
  m.d_model = 64;
  m.seq_len = 32;
  m.vocab_size = 300;
  ParameterLayout layout(Gpt2Config::FromSpec(m));
  std::vector<float> a(static_cast<size_t>(layout.total())), b(a.size()), c(a.size());
  InitGpt2(layout, a, 7);
  InitGpt2(layout, b, 7);
  InitGpt2(layout, c, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto stddev = [&](std::string_view name, int64_t limit = -1) {
    const TensorView& t = layout.at(name);
    int64_t n = limit < 0 ? t.size : limit;
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      double x = a[static_cast<size_t>(t.offset + i)];
      s += x;
      s2 += x * x;
    }
    return std::sqrt(s2 / static_cast<double>(n) -
                     (s / static_cast<double>(n)) * (s / static_cast<double>(n)));
  };
  EXPECT_NEAR(stddev("h.mlp.c_fc.weight"), 0.02, 0.001);
  EXPECT_NEAR(stddev("h.attn.c_proj.weight"), 0.02 / std::sqrt(8.0), 0.0005);
  EXPECT_NEAR(stddev("wte", int64_t{300} * 64), 0.02, 0.001);
  const TensorView& ln = layout.at("h.ln_1.weight");
  const TensorView& bias = layout.at("h.attn.c_attn.bias");
  for (int64_t i = 0; i < ln.size; ++i) ASSERT_EQ(a[static_cast<size_t>(ln.offset + i)], 1.0f);
  for (int64_t i = 0; i < bias.size; ++i) ASSERT_EQ(a[static_cast<size_t>(bias.offset + i)], 0.0f);
  const TensorView& wte = layout.at("wte");
  for (int64_t i = int64_t{300} * 64; i < wte.size; ++i) {
    ASSERT_EQ(a[static_cast<size_t>(wte.offset + i)], 0.0f) << "padded vocabulary row";
  }
}

TrainSpec Schedule(LrSchedule s) {
  TrainSpec t;
  t.lr = 1.0;
  t.min_lr = 0.1;
  t.warmup_steps = 10;
  t.lr_schedule = s;
  t.cooldown_steps = 20;
  return t;
}

TEST(LearningRate, CosineWarmsUpThenDecaysToMinLr) {
  TrainSpec t = Schedule(LrSchedule::kCosine);
  EXPECT_DOUBLE_EQ(LearningRate(t, 110, 1), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(t, 110, 10), 1.0);
  EXPECT_NEAR(LearningRate(t, 110, 60), 0.55, 1e-12);  // half way: (1 + 0.1) / 2
  EXPECT_NEAR(LearningRate(t, 110, 110), 0.1, 1e-12);
  EXPECT_NEAR(LearningRate(t, 110, 500), 0.1, 1e-12);
  for (int64_t s = 11; s < 110; ++s)
    EXPECT_GE(LearningRate(t, 110, s), LearningRate(t, 110, s + 1));
}

TEST(LearningRate, WsdHoldsThenCoolsDownLinearlyOrOneMinusSqrt) {
  TrainSpec t = Schedule(LrSchedule::kWsd);
  EXPECT_DOUBLE_EQ(LearningRate(t, 100, 50), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(t, 100, 80), 1.0);
  EXPECT_NEAR(LearningRate(t, 100, 90), 0.55, 1e-12);
  EXPECT_NEAR(LearningRate(t, 100, 100), 0.1, 1e-12);
  t.cooldown = CooldownShape::kOneMinusSqrt;
  EXPECT_NEAR(LearningRate(t, 100, 85), 0.1 + 0.9 * (1 - std::sqrt(0.25)), 1e-12);
  EXPECT_NEAR(LearningRate(t, 100, 100), 0.1, 1e-12);
}

TEST(GoldfishMask, DropsAboutOneInKAndOnlyByWindowContent) {
  SplitMix64 rng(3);
  const int T = 4096;
  std::vector<int32_t> seq(T + 1);
  for (int32_t& x : seq) x = static_cast<int32_t>(rng.Next() % 50257);
  std::vector<uint8_t> mask(T);
  int dropped = GoldfishMask(seq.data(), T, 50, 13, mask.data());
  EXPECT_EQ(dropped, T - std::accumulate(mask.begin(), mask.end(), 0));
  EXPECT_GT(dropped, 4096 / 50 / 2);
  EXPECT_LT(dropped, 4096 / 50 * 2);
  for (int t = 0; t < 11; ++t)
    EXPECT_EQ(mask[static_cast<size_t>(t)], 1) << "short window at " << t;

  // The same window elsewhere, in another sequence, gets the same decision.
  int t0 = -1;
  for (int t = 11; t < T && t0 < 0; ++t) {
    if (mask[static_cast<size_t>(t)] == 0) t0 = t;
  }
  ASSERT_GE(t0, 0);
  std::vector<int32_t> other(40, 7);
  std::copy(seq.begin() + (t0 + 2 - 13), seq.begin() + (t0 + 2), other.begin() + 20);
  std::vector<uint8_t> other_mask(39);
  GoldfishMask(other.data(), 39, 50, 13, other_mask.data());
  EXPECT_EQ(other_mask[20 + 13 - 2], 0);
}

TEST(Gpt2, GradientMatchesFiniteDifferences) {
  ParameterLayout layout(Tiny());
  std::vector<float> params(static_cast<size_t>(layout.total()));
  InitGpt2(layout, params, 1);
  // Larger weights than GPT-2's init make the finite differences meaningful in fp32.
  SplitMix64 rng(5);
  for (float& p : params) p += static_cast<float>(0.3 * rng.Normal());
  const int B = 2, T = 5;
  std::vector<int32_t> inputs(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    inputs[static_cast<size_t>(i)] = static_cast<int32_t>(rng.Next() % 11);
    targets[static_cast<size_t>(i)] = static_cast<int32_t>(rng.Next() % 11);
  }
  std::vector<uint8_t> mask(B * T, 1);
  mask[3] = 0;
  Gpt2 model(layout, B, T);
  std::vector<float> grads(params.size(), 0.0f);
  model.Forward(params.data(), inputs.data(), targets.data(), mask.data());
  model.Backward(params.data(), grads.data(), 1.0f);

  int checked = 0;
  for (const TensorView& t : layout.tensors()) {
    for (int64_t j : {int64_t{0}, t.size / 2, t.size - 1}) {
      size_t i = static_cast<size_t>(t.offset + j);
      if (t.name == "wte" && j >= int64_t{11} * 8) continue;  // padded rows: no gradient
      float saved = params[i];
      const float h = 1e-2f;
      params[i] = saved + h;
      double up = model.Forward(params.data(), inputs.data(), targets.data(), mask.data());
      params[i] = saved - h;
      double down = model.Forward(params.data(), inputs.data(), targets.data(), mask.data());
      params[i] = saved;
      double numeric = (up - down) / (2.0 * h);
      EXPECT_NEAR(grads[i], numeric, 2e-3 + 2e-2 * std::abs(numeric)) << t.name << "[" << j << "]";
      ++checked;
    }
  }
  EXPECT_GE(checked, 40);
}

TEST(Gpt2, GradientGroupsCoverEveryParameterOnce) {
  ParameterLayout layout(Tiny());
  std::vector<int> seen(static_cast<size_t>(layout.total()), 0);
  std::vector<std::vector<Segment>> groups = GradientGroups(layout);
  ASSERT_EQ(groups.size(), static_cast<size_t>(layout.config().n_layer + 2));
  for (const auto& g : groups) {
    for (const Segment& s : g) {
      for (int64_t i = 0; i < s.size; ++i) ++seen[static_cast<size_t>(s.offset + i)];
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "element " << i;
}

TEST(Gpt2, BackwardIntoStagingBuffersEqualsFlatBackward) {
  ParameterLayout layout(Tiny());
  const int L = layout.config().n_layer;
  std::vector<float> params(static_cast<size_t>(layout.total()));
  InitGpt2(layout, params, 3);
  const int B = 2, T = 5;
  SplitMix64 rng(9);
  std::vector<int32_t> inputs(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    inputs[static_cast<size_t>(i)] = static_cast<int32_t>(rng.Next() % 11);
    targets[static_cast<size_t>(i)] = static_cast<int32_t>(rng.Next() % 11);
  }
  std::vector<uint8_t> mask(B * T, 1);
  Gpt2 model(layout, B, T);
  model.Forward(params.data(), inputs.data(), targets.data(), mask.data());
  std::vector<float> flat(params.size(), 0.0f);
  model.Backward(params.data(), flat.data(), 0.1f);
  testing::StagingHook hook(GradientGroups(layout), layout.total());
  ASSERT_TRUE(model.Backward(params.data(), nullptr, 0.1f, hook).ok());
  EXPECT_EQ(hook.Gathered(), flat);
  EXPECT_EQ(hook.calls(), testing::StagingHook::ExpectedCalls(L));
}

}  // namespace
}  // namespace belay::model
