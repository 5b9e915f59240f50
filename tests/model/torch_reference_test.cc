// belay's GPT-2 training step against PyTorch: the same initial parameters and batches
// (Goldfish-masked, with gradient accumulation) go through belay's fp32 CPU path and through
// tests/model/gpt2_reference.py in float64; logits, per-tensor gradients, losses over 10
// AdamW steps, norms, learning rates and the final parameters must agree, and the script
// checks belay's Goldfish masks against its own implementation of the rule.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/rng.h"
#include "tests/model/compare.h"
#include "tests/model/raw_files.h"
#include "worker/model/goldfish.h"
#include "worker/model/gpt2.h"
#include "worker/model/params.h"
#include "worker/optim/optimizer.h"
#include "worker/train/update.h"

namespace belay {
namespace {

using testing::ReadF64;
using testing::WriteRaw;

TEST(TorchReference, TrainingStepsMatchPyTorch) {
  ModelSpec ms;
  ms.n_layer = 2;
  ms.n_head = 2;
  ms.d_model = 16;
  ms.seq_len = 8;
  ms.vocab_size = 50;  // padded to 128
  TrainSpec ts;
  ts.micro_batch = 2;
  ts.global_batch = 4;  // 2 accumulation steps on one rank
  ts.lr = 3e-3;
  ts.min_lr = 3e-4;
  ts.warmup_steps = 2;
  ts.weight_decay = 0.1;
  ts.grad_clip = 0.5;  // low enough to clip in some steps
  const int64_t steps = 10, accum = 2, M = 2, T = 8;
  const int64_t goldfish_k = 3, goldfish_h = 4;

  model::ParameterLayout layout(model::Gpt2Config::FromSpec(ms));
  std::vector<float> params(static_cast<size_t>(layout.total())), grads(params.size());
  model::InitGpt2(layout, params, 1234);
  // GPT-2's small initial weights keep activations near 0, where e.g. exact and tanh GELU
  // agree to 1e-6; larger weights put every op in its non-linear range so that a wrong
  // formula cannot hide. Padded vocabulary rows stay 0.
  SplitMix64 noise(7);
  const int64_t real_wte = int64_t{50} * 16;
  for (const model::TensorView& t : layout.tensors()) {
    for (int64_t i = 0; i < t.size; ++i) {
      if (t.name == "wte" && i >= real_wte) continue;
      params[static_cast<size_t>(t.offset + i)] += static_cast<float>(0.3 * noise.Normal());
    }
  }
  std::vector<float> initial = params;

  // Batches of random tokens, masked by Goldfish with a small k so that many positions drop.
  SplitMix64 rng(99);
  const size_t n = static_cast<size_t>(steps * accum * M * T);
  std::vector<int32_t> inputs(n), targets(n);
  std::vector<uint8_t> masks(n);
  std::vector<int32_t> seq(static_cast<size_t>(T + 1));
  for (size_t row = 0; row < n / T; ++row) {
    for (int32_t& x : seq) x = static_cast<int32_t>(rng.Next() % 50);
    std::copy(seq.begin(), seq.begin() + T, inputs.begin() + static_cast<long>(row * T));
    std::copy(seq.begin() + 1, seq.end(), targets.begin() + static_cast<long>(row * T));
    model::GoldfishMask(seq.data(), T, goldfish_k, goldfish_h, masks.data() + row * T);
  }
  size_t dropped = static_cast<size_t>(std::count(masks.begin(), masks.end(), uint8_t{0}));
  ASSERT_GT(dropped, n / 10) << "the test should exercise masking";

  model::Gpt2 model(layout, M, T);
  optim::Optimizer opt(optim::WholeTensors(layout.tensors()), layout.total(), ts, {});
  std::vector<double> losses, norms, lrs;
  std::vector<float> grads1, logits1;
  for (int64_t s = 0; s < steps; ++s) {
    size_t off = static_cast<size_t>(s * accum * M * T);
    if (s == 0) {
      // The gradient of the first step, before clipping, for a direct comparison.
      std::vector<float> p0 = params;
      model::Gpt2 probe(layout, M, T);
      std::vector<float> g(params.size(), 0.0f);
      int64_t counted = std::count(masks.begin(), masks.begin() + accum * M * T, uint8_t{1});
      for (int64_t a = 0; a < accum; ++a) {
        size_t o = static_cast<size_t>(a * M * T);
        probe.Forward(p0.data(), inputs.data() + o, targets.data() + o, masks.data() + o);
        if (a == 0) logits1 = probe.logits();
        probe.Backward(p0.data(), g.data(), 1.0f / static_cast<float>(counted));
      }
      grads1 = g;
    }
    train::UpdateResult r =
        train::UpdateOnBatch(model, opt, ts, steps, s + 1, params, grads, inputs.data() + off,
                             targets.data() + off, masks.data() + off, accum);
    losses.push_back(r.loss);
    norms.push_back(r.grad_norm);
    lrs.push_back(r.lr);
  }

  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("torch_ref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const model::Gpt2Config& c = layout.config();
  std::ofstream(dir / "config.json")
      << "{\"n_layer\": " << c.n_layer << ", \"n_head\": " << c.n_head
      << ", \"d_model\": " << c.d_model << ", \"max_seq_len\": " << c.max_seq_len
      << ", \"vocab_size\": " << c.vocab_size << ", \"padded_vocab\": " << c.padded_vocab
      << ", \"steps\": " << steps << ", \"accum\": " << accum << ", \"micro_batch\": " << M
      << ", \"seq_len\": " << T << ", \"lr\": " << ts.lr << ", \"min_lr\": " << ts.min_lr
      << ", \"warmup_steps\": " << ts.warmup_steps << ", \"total_steps\": " << steps
      << ", \"weight_decay\": " << ts.weight_decay << ", \"beta1\": " << ts.beta1
      << ", \"beta2\": " << ts.beta2 << ", \"eps\": " << ts.eps
      << ", \"grad_clip\": " << ts.grad_clip << ", \"goldfish_k\": " << goldfish_k
      << ", \"goldfish_h\": " << goldfish_h << "}\n";
  WriteRaw(dir / "params.f32", initial);
  WriteRaw(dir / "inputs.i32", inputs);
  WriteRaw(dir / "targets.i32", targets);
  WriteRaw(dir / "masks.u8", masks);
  std::string cmd =
      "/usr/bin/python3 " BELAY_SOURCE_DIR "/tests/model/gpt2_reference.py " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  std::vector<double> ref_losses = ReadF64(dir / "ref_losses.f64");
  std::vector<double> ref_norms = ReadF64(dir / "ref_grad_norms.f64");
  std::vector<double> ref_lrs = ReadF64(dir / "ref_lrs.f64");
  std::vector<double> ref_grads1 = ReadF64(dir / "ref_grads1.f64");
  std::vector<double> ref_params = ReadF64(dir / "ref_params.f64");
  std::vector<double> ref_logits = ReadF64(dir / "ref_logits.f64");
  ASSERT_EQ(ref_losses.size(), static_cast<size_t>(steps));
  ASSERT_EQ(ref_grads1.size(), params.size());
  ASSERT_EQ(ref_params.size(), params.size());

  // fp32 against float64: losses and norms agree to ~1e-6 relative; a tolerance of 1e-5
  // leaves room for the accumulation order without hiding a wrong formula (which shows up
  // at 1e-2 or worse).
  for (int64_t s = 0; s < steps; ++s) {
    size_t i = static_cast<size_t>(s);
    EXPECT_NEAR(losses[i], ref_losses[i], 1e-5 * std::abs(ref_losses[i])) << "step " << s + 1;
    EXPECT_NEAR(norms[i], ref_norms[i], 1e-4 * std::abs(ref_norms[i])) << "step " << s + 1;
    EXPECT_DOUBLE_EQ(lrs[i], ref_lrs[i]) << "step " << s + 1;
  }
  EXPECT_LT(ts.grad_clip, *std::max_element(ref_norms.begin(), ref_norms.end()))
      << "no step was clipped";

  // Logits of the first micro-batch (real vocabulary columns) and the first step's gradient,
  // tensor by tensor: relative L2 error ≤ 1e-4 (fp32 against float64; measured ~1e-7).
  const size_t V = 50, Vp = static_cast<size_t>(layout.config().padded_vocab);
  ASSERT_EQ(ref_logits.size(), static_cast<size_t>(M * T) * V);
  double logits_err =
      testing::RelativeL2([&](size_t i) { return double{logits1[(i / V) * Vp + i % V]}; },
                          [&](size_t i) { return ref_logits[i]; }, ref_logits.size());
  std::cout << "logits: relative L2 error " << logits_err << "\n";
  EXPECT_LE(logits_err, 1e-4);
  for (const model::TensorView& t : layout.tensors()) {
    size_t o = static_cast<size_t>(t.offset);
    double err = testing::RelativeL2([&](size_t i) { return double{grads1[o + i]}; },
                                     [&](size_t i) { return ref_grads1[o + i]; },
                                     static_cast<size_t>(t.size));
    std::cout << "gradient " << t.name << ": relative L2 error " << err << "\n";
    EXPECT_LE(err, 1e-4) << t.name;
  }

  // After 10 AdamW updates each parameter moved by up to ~10·lr. Adam divides by the
  // gradient's running RMS, so for elements whose gradient is at fp32's rounding level the
  // direction of a step is noise; such elements (well under 1%) may differ by up to 2·lr per
  // step. The rest agree to 1e-5; a wrong formula moves most elements (and the losses above).
  const testing::ParameterDrift drift =
      testing::CompareParameters(params, ref_params, 1e-5, 2 * ts.lr * steps);
  EXPECT_EQ(drift.off_loose, 0u);
  EXPECT_LT(drift.off_tight, params.size() / 100);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace belay
